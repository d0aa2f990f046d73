"""Spliced read replies (src/fs/splice.rs): `.npy` files of uncompressed arrays on a local store are answered with
the store file's pages spliced into /dev/fuse. Every way of reading them — numpy.load, reads of odd sizes at odd
offsets, an mmap — returns exactly what numpy writes for the arrays h5py reads, through direct I/O and through
the page cache, and `.annfs/stats.json` shows the bytes went the spliced way (when this machine lets a process
make a pipe large enough for a reply).
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import random
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest

from conftest import Mount, need_fuse

pytestmark = need_fuse

F_SETPIPE_SZ = 1031
CELLS = 200_000


def pipes_can_hold_a_reply() -> bool:
    """True when this process may make a pipe of 256 KiB or more (spliced replies need one)."""
    r, w = os.pipe()
    try:
        return fcntl.fcntl(w, F_SETPIPE_SZ, 256 << 10) >= 256 << 10
    except OSError:
        return False
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    rng = np.random.default_rng(5)
    a = ad.AnnData(X=np.zeros((CELLS, 3), dtype=np.float32))
    a.obsm["X_pca"] = rng.standard_normal((CELLS, 10)).astype(np.float32)  # contiguous, 8 MB
    path = tmp_path_factory.mktemp("splice") / "s.h5ad"
    a.write_h5ad(path)
    with h5py.File(path, "a") as f:
        # Chunked, uncompressed, chunks spanning the trailing dimension, the last chunk partial.
        d = f.create_dataset("obsm/X_chunked", data=rng.integers(-9, 9, (CELLS, 7), dtype=np.int64), chunks=(7001, 7))
        d.attrs["encoding-type"] = "array"
        d.attrs["encoding-version"] = "0.2.0"
    return path


def npy_bytes(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


@pytest.mark.parametrize("page_cache", ["text", "all"])
def test_spliced_npy_reads_equal_numpy(store, tmp_path, page_cache):
    with h5py.File(store, "r") as f:
        want = {k: f[f"obsm/{k}"][:] for k in ("X_pca", "X_chunked")}
    with Mount(store, tmp_path / "m", "--page-cache", page_cache, "--cache-dir", str(tmp_path / "c")) as m:
        for key, arr in want.items():
            path = m.mnt / "obsm" / f"{key}.npy"
            ref = npy_bytes(arr)
            assert np.array_equal(np.load(path), arr), key
            # Reads of odd sizes at odd offsets, some crossing the header and chunk boundaries.
            rng = random.Random(key)
            fd = os.open(path, os.O_RDONLY)
            try:
                for off, n in [(0, 1 << 20), (100, 700_001), (len(ref) - 90_000, 200_000)] + [
                        (rng.randrange(len(ref)), rng.randrange(1, 3 << 20)) for _ in range(20)]:
                    assert os.pread(fd, n, off) == ref[off:off + n], f"{key}: {n} bytes at {off}"
            finally:
                os.close(fd)
            assert np.array_equal(np.load(path, mmap_mode="r"), arr), f"{key}: mmap"
            assert path.read_bytes() == ref, key
        stats = json.loads((m.mnt / ".annfs" / "stats.json").read_text())
    if pipes_can_hold_a_reply():
        # Most of the arrays went spliced (the first pages of a file read through the page cache come in
        # requests too small to splice).
        assert stats["bytes_spliced"] > 0.5 * sum(a.nbytes for a in want.values()), stats
    assert stats["errors"] == 0, stats


def test_a_replaced_store_is_not_spliced(store, tmp_path):
    """Once the store file changes under the mount, reads fail (EIO) instead of splicing old or new bytes."""
    copy = tmp_path / "c.h5ad"
    copy.write_bytes(store.read_bytes())
    with Mount(copy, tmp_path / "m", "--cache-dir", str(tmp_path / "c")) as m:
        path = m.mnt / "obsm" / "X_pca.npy"
        with open(path, "rb") as fh:
            assert len(fh.read(1 << 20)) == 1 << 20
            with open(copy, "r+b") as w:
                w.seek(4096)
                w.write(b"\0" * 8)
            with pytest.raises(OSError):
                for _ in range(10):
                    fh.read(1 << 20)
