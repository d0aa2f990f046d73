#!/usr/bin/env bash
# Idempotent set-up for building and running annfs on a fresh Debian machine: the system packages
# the build and a mount need, cmake for the bundled HDF5 (in ./.venv), and a release build of
# annfs (target/release/annfs).  Safe to run repeatedly.  The test oracle is set up separately by
# scripts/setup-tests.sh (scripts/test.sh runs both).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# fuse3: fusermount3 and mount.fuse3; pkg-config + a C toolchain: the build; python3-venv: cmake below.
apt_install fuse3 pkg-config ca-certificates gcc g++ make python3-venv

# HDF5 is compiled from source and linked statically; its CMakeLists needs cmake >= 3.26, and
# Debian 12 ships 3.25, so a venv holding only PyPI's cmake provides it (~30 MB, seconds).
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
cmake_version=0
[ ! -x .venv/bin/cmake ] || cmake_version=$(.venv/bin/cmake --version | awk 'NR==1 {print $3}')
if [ "$(printf '%s\n' 3.26 "$cmake_version" | sort -V | head -1)" != 3.26 ]; then
  echo "setup: installing cmake>=3.26 into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check 'cmake>=3.26'
fi

# Build (the release profile: the test command and the package reuse this build).
export PATH="$PWD/.venv/bin:$PATH"
set +o pipefail
cargo build --release --locked --bin annfs 2>&1 | grep -vE '^\s+(Compiling|Downloaded|Downloading)' >&2
status=${PIPESTATUS[0]}
set -o pipefail
[ "$status" -eq 0 ] || { echo "setup: cargo build failed" >&2; exit 1; }
