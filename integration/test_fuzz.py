"""Damaged stores fail cleanly: never a panic, an abort or a hang (issue 9, targets 5 and 6).

- Every committed regression fixture under tests/fixtures/damaged/ (MANIFEST.json says which
  file must fail and which must still read) gives a clean error from `annfs cat` within seconds.
- The issue-9 case through a real mount: `var.tsv` of a store whose heap collection is zeroed
  answers EIO promptly while the rest of the mount keeps working.
- A bounded fuzz campaign (scripts/fuzz_stores.py over every fixture, fixed seed) finds nothing.
"""
from __future__ import annotations

import errno
import io
import json
import subprocess
import sys
import time

import pytest

from conftest import ANNFS_BIN, FIXTURES, REPO, Mount, bin_skip_reason, fuse_skip_reason, mount_stats, run_annfs

DAMAGED = FIXTURES / "damaged"
MANIFEST = json.loads((DAMAGED / "MANIFEST.json").read_text())
READER = REPO / "target" / "release" / "examples" / "fuzz_read"

pytestmark = pytest.mark.skipif(bin_skip_reason() is not None, reason=bin_skip_reason() or "")


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_damaged_fixture_fails_cleanly(name):
    case = MANIFEST[name]
    store = DAMAGED / name
    for path in case["fails"]:
        t = time.monotonic()
        r = run_annfs("cat", store, path, timeout=20)
        took = time.monotonic() - t
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 1, f"{name} {path}: exit {r.returncode}\n{err}"
        assert "panicked" not in err and "annfs:" in err, err
        assert case["reason"] in err, f"{name} {path}: expected {case['reason']!r} in\n{err}"
        assert took < 10, f"{name} {path}: {took:.1f} s"
    for path, expected in case.get("reads", {}).items():
        r = run_annfs("cat", store, path, timeout=20)
        assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
        assert r.stdout.decode() == expected, f"{name} {path}"


@pytest.mark.skipif(fuse_skip_reason() is not None, reason=fuse_skip_reason() or "")
def test_subsets_size_a_long_categories_listing_once(tmp_path):
    """categories_long.v2.zarr (a semantic-fuzzer finding): the categories listing is the same file in
    every where/ subset, sized once for the mount (each subset sized its own 4M lines before)."""
    store = DAMAGED / "categories_long.v2.zarr"
    with Mount(store, tmp_path / "m", "--cache-dir", str(tmp_path / "cache")) as m:
        subsets = sorted(p for p in (m.mnt / "where").iterdir() if p.name.startswith("c="))
        assert len(subsets) == 30, subsets
        want = (m.mnt / "obs" / "c.categories.txt").read_bytes()
        assert want.startswith(b"t00\nt01\n") and want.count(b"\n") == 1 << 22
        for sub in subsets:
            assert (sub / "obs" / "c.categories.txt").read_bytes() == want, sub
        assert mount_stats(m.mnt)["text_views_sized"] == 1


@pytest.mark.skipif(fuse_skip_reason() is not None, reason=fuse_skip_reason() or "")
def test_a_million_tiny_chunks_read_through_the_mount(tmp_path):
    """chunks_tiny.h5ad (a semantic-fuzzer finding): `uns/arr` in 2^20 chunks of one element. A
    sequential reader drops each chunk behind it; the recycler of chunk buffers kept every one and
    summed them all on each new one, so `cat` of the 8 MB `.npy` took 49 s. The bytes must equal
    h5py's, read well within the fuzzer's 20 s deadline."""
    import h5py
    import numpy as np

    store = DAMAGED / "chunks_tiny.h5ad"
    with h5py.File(store, "r") as f:
        want = f["uns/arr"][:]
    with Mount(store, tmp_path / "m", "--cache-dir", str(tmp_path / "cache")) as m:
        r = subprocess.run(["cat", str(m.mnt / "uns" / "arr.npy")], capture_output=True, timeout=20)
        assert r.returncode == 0, r.stderr
        got = np.load(io.BytesIO(r.stdout))
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert got[:5].tolist() == [1.0, 2.0, 3.0, 4.0, 0.0]
        # Read again, here and in a where/ selection (which shows the same uns): the array is
        # served through cached blocks, so its million chunks are decoded once, not per read
        # (seed 93's cases 133 and 339 read it in every selection: 60 s, now 3-4 s).
        stats = lambda: json.loads((m.mnt / ".annfs" / "stats.json").read_text())  # noqa: E731
        decoded = stats()["chunks_decoded"]
        assert decoded > 1_000_000, decoded
        for rel in ("uns/arr.npy", "where/c=a/uns/arr.npy", "where/c=b/uns/arr.npy"):
            assert (m.mnt / rel).read_bytes() == r.stdout, rel
        again = stats()["chunks_decoded"] - decoded  # a selection decodes obs/c's codes: a chunk or two
        assert again < 1000, f"the chunks were decoded again: {again}"


@pytest.mark.skipif(fuse_skip_reason() is not None, reason=fuse_skip_reason() or "")
def test_zeroed_heap_is_eio_through_the_mount(tmp_mnt):
    store = DAMAGED / "heap_zeroed.h5ad"
    with Mount(store, tmp_mnt) as m:
        t = time.monotonic()
        with pytest.raises(OSError) as e:
            (m.mnt / "var.tsv").read_bytes()
        assert e.value.errno == errno.EIO
        assert time.monotonic() - t < 10
        # The failure is local to that file: other strings of the same file still read.
        assert (m.mnt / "obs.tsv").read_text().splitlines()[1:] == ["c0\t0", "c1\t1", "c2\t2", "c3\t3"]
        with pytest.raises(OSError):
            (m.mnt / "var" / "index.txt").read_bytes()


def _reader() -> str:
    """The one-process reader of the fuzz script, built if missing or older than annfs."""
    if not READER.exists() or READER.stat().st_mtime < ANNFS_BIN.stat().st_mtime:
        subprocess.run(["cargo", "build", "--release", "--example", "fuzz_read"], cwd=REPO, check=True,
                       capture_output=True, timeout=900)
    return str(READER)


def test_bounded_fuzz_campaign(tmp_path):
    reader = _reader()
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fuzz_stores.py"), "-n", "200", "--seed", "9", "--jobs", "2",
         "--annfs", str(ANNFS_BIN), "--reader", reader, "--findings", str(tmp_path / "findings")],
        capture_output=True, text=True, timeout=170)
    summary = [ln for ln in r.stdout.splitlines() if ln.startswith("fuzz:")]
    assert summary, r.stdout + r.stderr
    assert "200 stores, 0 panics, 0 aborts, 0 hangs" in summary[0], r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
