#!/usr/bin/env bash
# bounded.sh SECONDS COMMAND...: runs COMMAND; if it is still running after SECONDS, prints the
# thread stacks (gdb, when installed) of its child processes (cargo's test binaries), kills them
# and COMMAND, and fails. Exits with COMMAND's status otherwise.
set -uo pipefail
limit=$1
shift
"$@" &
cmd=$!
(
  sleep "$limit" &
  wait $!
  kill -0 "$cmd" 2>/dev/null || exit 0
  echo "== still running after $limit s: $*; thread stacks of its processes:" >&2
  for p in $(pgrep -P "$cmd") "$cmd"; do
    echo "-- pid $p: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" >&2
    if command -v gdb >/dev/null; then
      gdb -p "$p" -batch -ex "thread apply all bt" 2>/dev/null | grep -E '^(Thread|#)' >&2
    fi
  done
  pkill -9 -P "$cmd" 2>/dev/null
  kill -9 "$cmd" 2>/dev/null
) &
watchdog=$!
wait "$cmd"
status=$?
pkill -P "$watchdog" sleep 2>/dev/null
kill "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
if [ "$status" -ne 0 ]; then
  echo "== failed (exit $status): $*" >&2
fi
exit "$status"
