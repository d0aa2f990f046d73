#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, the Python test
# oracle (in ./.venv) and a release build of annfs.  Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
# r-base-core + r-cran-matrix: R clients of the end-to-end suite (Matrix::readMM, read.delim); ~35 MB, ~15 s.
for p in fuse3 pkg-config ca-certificates util-linux r-base-core r-cran-matrix; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
# systemd-analyze verifies the units in systemd/ (tests); runuser (util-linux) runs readers as other users.
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Python oracle environment.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum integration/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r integration/requirements.txt
  echo "$want" > "$stamp"
fi

# Build (HDF5 is compiled from source and linked statically; it needs cmake >= 3.26 from the venv).
export PATH="$PWD/.venv/bin:$PATH"
set +o pipefail
cargo build --release --locked 2>&1 | grep -vE '^\s+(Compiling|Downloaded|Downloading)' >&2
status=${PIPESTATUS[0]}
set -o pipefail
[ "$status" -eq 0 ] || { echo "setup: cargo build failed" >&2; exit 1; }
