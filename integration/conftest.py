"""Shared fixtures for the annfs end-to-end suite.

Binary: <repo>/target/release/annfs, or $ANNFS_BIN.  Tests that need it skip when it is missing; tests that need
FUSE skip when /dev/fuse or fusermount3 is missing.  The fresh random store's seed: $ANNFS_TEST_SEED (else random,
printed in the header of the pytest run).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import oracle  # noqa: E402
from fresh import make_random_store  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
COMMITTED = sorted(FIXTURES.glob("*.h5ad"))
ANNFS_BIN = Path(os.environ.get("ANNFS_BIN", REPO / "target" / "release" / "annfs"))
SEED = int(os.environ.get("ANNFS_TEST_SEED", random.SystemRandom().randrange(2**31)))
MOUNT_TIMEOUT = float(os.environ.get("ANNFS_MOUNT_TIMEOUT", "30"))

_WORK = Path(tempfile.mkdtemp(prefix="annfs-it-"))
FRESH = _WORK / f"fresh_seed{SEED}.h5ad"

STORE_IDS = [p.stem for p in COMMITTED] + ["fresh"]


def pytest_report_header(config):
    return [f"annfs binary: {ANNFS_BIN} ({'present' if ANNFS_BIN.exists() else 'MISSING'})",
            f"fresh store seed: {SEED} (set ANNFS_TEST_SEED={SEED} to reproduce)",
            f"fixtures: {len(COMMITTED)} committed + 1 fresh"]


def store_path(store_id: str) -> Path:
    if store_id == "fresh":
        if not FRESH.exists():
            make_random_store(FRESH, SEED)
        return FRESH
    return FIXTURES / f"{store_id}.h5ad"


def fuse_skip_reason() -> str | None:
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing (FUSE not available in this environment)"
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        return "fusermount3 is not installed"
    if not ANNFS_BIN.exists():
        return f"annfs binary not built: {ANNFS_BIN} (cargo build --release, or set ANNFS_BIN)"
    return None


def bin_skip_reason() -> str | None:
    if not ANNFS_BIN.exists():
        return f"annfs binary not built: {ANNFS_BIN} (cargo build --release, or set ANNFS_BIN)"
    return None


need_fuse = pytest.mark.skipif(fuse_skip_reason() is not None, reason=str(fuse_skip_reason()))
need_bin = pytest.mark.skipif(bin_skip_reason() is not None, reason=str(bin_skip_reason()))


# --------------------------------------------------------------------------------------------------------------
# Mounting
# --------------------------------------------------------------------------------------------------------------

def mount_stats(mnt: Path) -> dict:
    """`.annfs/stats.json` in one read: it is rendered afresh on every read (its byte counters count the reads
    themselves)."""
    fd = os.open(mnt / ".annfs" / "stats.json", os.O_RDONLY)
    try:
        return json.loads(os.read(fd, 1 << 16))
    finally:
        os.close(fd)


def is_mounted(mnt: Path) -> bool:
    target = os.path.realpath(mnt)
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1 and parts[1].replace("\\040", " ") == target:
                return True
    return False


def force_unmount(mnt: Path) -> None:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            subprocess.run([tool, "-u", "-z", str(mnt)], capture_output=True)
            return


class Mount:
    """`annfs mount STORE MNT` in the foreground; ready when MNT/README.txt exists. `command` replaces
    `mount` (e.g. `bench-mount --zero-file SIZE`)."""

    def __init__(self, store: Path, mnt: Path, *extra: str, command: tuple[str, ...] = ("mount",)):
        self.store = Path(store)
        self.mnt = Path(mnt)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.mnt.parent / (self.mnt.name + ".stderr")
        self.extra = list(extra)
        self.command = list(command)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = MOUNT_TIMEOUT) -> "Mount":
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(ANNFS_BIN), *self.command, str(self.store), str(self.mnt), *self.extra],
            stdout=subprocess.DEVNULL, stderr=self._err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"annfs mount exited with {self.proc.returncode} before the mount was ready:\n"
                                   f"{self.stderr()}")
            if is_mounted(self.mnt) and (self.mnt / "README.txt").exists():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mount not ready after {timeout}s:\n{self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int | None:
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc is not None:
            rc = self.proc.returncode
        if is_mounted(self.mnt):
            force_unmount(self.mnt)
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_MOUNTS: dict[str, Mount] = {}


def shared_mount(store_id: str) -> Mount:
    """One mount per store for the whole session (mounting is cheap, but not free)."""
    m = _MOUNTS.get(store_id)
    if m is not None and m.proc is not None and m.proc.poll() is None and is_mounted(m.mnt):
        return m
    m = Mount(store_path(store_id), _WORK / "mnt" / store_id)
    m.start()
    _MOUNTS[store_id] = m
    return m


def pytest_sessionfinish(session, exitstatus):
    for m in _MOUNTS.values():
        try:
            m.stop()
        except Exception:
            pass
    shutil.rmtree(_WORK, ignore_errors=True)


@pytest.fixture(params=STORE_IDS)
def store_id(request):
    return request.param


@pytest.fixture
def store(store_id) -> Path:
    return store_path(store_id)


@pytest.fixture
def mounted(store_id):
    reason = fuse_skip_reason()
    if reason:
        pytest.skip(reason)
    return shared_mount(store_id)


@pytest.fixture
def tmp_mnt(tmp_path):
    """A fresh mount point; force-unmounted at teardown whatever happened."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    yield mnt
    if is_mounted(mnt):
        force_unmount(mnt)


def run_annfs(*args, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANNFS_BIN), *map(str, args)], capture_output=True, timeout=timeout, **kw)


# --------------------------------------------------------------------------------------------------------------
# The store is never written: sha256 of every store before and after each test module.
# --------------------------------------------------------------------------------------------------------------

def _sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def stores_unchanged():
    paths = COMMITTED + ([FRESH] if FRESH.exists() else [])
    before = {p: (_sha(p), p.stat().st_mtime_ns) for p in paths}
    yield
    for p, (sha, mtime) in before.items():
        assert _sha(p) == sha, f"store {p} was modified"
        assert p.stat().st_mtime_ns == mtime, f"store {p} mtime changed"


# --------------------------------------------------------------------------------------------------------------
# Walking a real directory tree (the mount)
# --------------------------------------------------------------------------------------------------------------

def escape_listed(path: str) -> str:
    """A path as `annfs ls` prints it: backslash and newline escaped (`\\\\`, `\\n`)."""
    return path.replace("\\", "\\\\").replace("\n", "\\n")


def walk_files(root: Path, skip_dirs=("rows", "where")) -> tuple[set[str], set[str]]:
    """(files, dirs) below root, relative, without descending into `rows/` and `where/` directories (lazy views)
    -- their listing is checked separately."""
    files, dirs = set(), set()
    for dp, dns, fns in os.walk(root):
        rel = os.path.relpath(dp, root)
        rel = "" if rel == "." else rel
        keep = []
        for d in dns:
            p = f"{rel}/{d}" if rel else d
            dirs.add(p)
            if d not in skip_dirs:
                keep.append(d)
        dns[:] = keep
        for f in fns:
            files.add(f"{rel}/{f}" if rel else f)
    return files, dirs


_NPY_PARSE = threading.Lock()


def load_npy_threaded(path) -> "np.ndarray":
    """`numpy.load(path)` for tests that read from many threads at once: the bytes are read
    concurrently (through the mount, what the test exercises), the `.npy` header is parsed under
    a lock. numpy parses headers with `ast.literal_eval`, and CPython 3.11 (the venv's) can raise
    "SystemError: AST constructor recursion depth mismatch" when threads do that at once — a CI
    run of test_memory.py failed so, with every byte the mount served correct."""
    import numpy as np

    data = Path(path).read_bytes()
    with _NPY_PARSE:
        return np.load(io.BytesIO(data))
