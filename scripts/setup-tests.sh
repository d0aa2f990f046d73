#!/usr/bin/env bash
# Idempotent set-up of the test oracle on top of scripts/setup.sh: R (the suite's R clients),
# nginx (a real HTTP server for the remote tests), systemd-analyze, runuser, dpkg-deb, the Python
# oracle (anndata, h5py, zarr, scanpy, scipy, pandas, pytest; integration/requirements.txt) in
# ./.venv, and Azurite (Microsoft's Azure Storage emulator, from npm) in ./.venv/azurite.  Safe to
# run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# r-base-core + r-cran-matrix: R clients of the end-to-end suite (Matrix::readMM, read.delim); ~35 MB, ~15 s.
# util-linux: runuser (readers as other users); dpkg-dev + binutils: scripts/package.sh (dpkg-shlibdeps, strip)
# for the package test; python3-venv: the oracle's venv.
apt_install r-base-core r-cran-matrix util-linux dpkg-dev binutils python3-venv
# nginx-light: a real static HTTP server for the remote tests and the benchmark's HTTP rows; each runs
# a private instance on a free port (integration/servers.py), so the system service the package starts
# is stopped and disabled when this script installed it. Optional: without it those tests are skipped.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if apt_install nginx-light; then
    (systemctl disable --now nginx || service nginx stop) >/dev/null 2>&1 || true
  else
    echo "setup: nginx-light could not be installed: the nginx tests will be skipped" >&2
  fi
fi
# systemd-analyze verifies the units in systemd/.
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd

# clippy: the test command lints the code (warnings are errors).
command -v cargo-clippy >/dev/null 2>&1 || rustup component add clippy

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.requirements.sha
want=$(sha256sum integration/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r integration/requirements.txt
  echo "$want" > "$stamp"
fi

# Azurite for the az:// tests (integration/test_cloud.py), pinned; ~190 MB, ~15 s. Node.js from Debian
# when the machine has none.
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
AZURITE=3.35.0
if [ "$(cat .venv/azurite/.version 2>/dev/null)" != "$AZURITE" ]; then
  npm install --silent --no-audit --no-fund --prefix .venv/azurite "azurite@$AZURITE"
  echo "$AZURITE" > .venv/azurite/.version
fi
