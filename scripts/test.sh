#!/usr/bin/env bash
# Sets up a fresh Debian machine (idempotently: scripts/setup.sh builds annfs, scripts/setup-tests.sh
# installs the test oracle) and runs every test: clippy, the Rust unit and integration tests,
# then the end-to-end suite through real FUSE mounts (integration/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-tests.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== cargo clippy (warnings are errors)" >&2
cargo clippy --release --all-targets --locked -- -D warnings 2>&1
echo "== cargo test" >&2
# The tests take well under a minute; a hung test binary (a deadlock) fails the run after
# 15 minutes with every thread's stack instead of stalling CI until its own limit.
cargo test --release --locked --no-run 2>&1
bash scripts/bounded.sh 900 cargo test --release --locked 2>&1
echo "== integration (real mounts, anndata as oracle)" >&2
exec .venv/bin/python -m pytest integration -q -p no:cacheprovider
