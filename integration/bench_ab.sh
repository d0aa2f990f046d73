#!/bin/bash
# Interleaved A/B timing of annfs binaries on fresh mounts.
#
#   integration/bench_ab.sh STORE N BIN1 BIN2 ...      (env FILES: paths in the mount to read)
#
# For each of N rounds and each binary in turn: mount STORE, stat FILES (lookups are not timed),
# read FILES whole with `dd bs=1M`, unmount. Prints each binary's median, min and max read time.
# Interleaving the binaries spreads the host's noise over all of them; copy the binaries out of
# target/ first (e.g. /tmp/annfs-old, /tmp/annfs-new) so a rebuild cannot change them mid-run.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 3,9p "$0"; exit 2; }
store=$1; n=$2; shift 2
files=${FILES:-"X/csr/data.npy X/csr/indices.npy"}
mnt=$(mktemp -d /tmp/annfs-ab.XXXX); out=$(mktemp -d /tmp/annfs-ab-times.XXXX)
trap 'fusermount3 -u "$mnt" 2>/dev/null || true; rmdir "$mnt"; rm -r "$out"' EXIT
for i in $(seq "$n"); do
  for b in "$@"; do
    "$b" mount "$store" "$mnt" --cache-size 256M --log-level warn &
    for _ in $(seq 250); do [ -e "$mnt/README.txt" ] && break; sleep 0.02; done
    for f in $files; do stat "$mnt/$f" > /dev/null; done
    s=$(date +%s%N)
    for f in $files; do dd if="$mnt/$f" of=/dev/null bs=1M 2>/dev/null; done
    e=$(date +%s%N)
    echo $(( (e - s) / 1000 )) >> "$out/$(echo "$b" | tr / _)"
    fusermount3 -u "$mnt"; wait
  done
done
for b in "$@"; do
  sort -n "$out/$(echo "$b" | tr / _)" | awk -v b="$b" '{a[NR]=$1} END {printf "%s: median %.1f ms (min %.1f, max %.1f, %d mounts)\n", b, a[int((NR+1)/2)]/1000, a[1]/1000, a[NR]/1000, NR}'
done
