"""Read-only mount, bad stores, and one corrupt element."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import oracle
from conftest import (ANNFS_BIN, FIXTURES, Mount, fuse_skip_reason, is_mounted, need_bin, need_fuse, shared_mount,
                      store_path)

RO_STORE = "dense_f32"


def _expect_errno(fn, *codes):
    try:
        fn()
    except OSError as e:
        assert e.errno in codes, f"{fn}: errno {e.errno} ({os.strerror(e.errno)}), expected {codes}"
    else:
        raise AssertionError(f"{fn} succeeded on a read-only mount")


@need_fuse
class TestReadOnly:
    @pytest.fixture(autouse=True)
    def _m(self):
        self.m = shared_mount(RO_STORE)
        self.mnt = self.m.mnt

    def test_write_existing(self):
        _expect_errno(lambda: open(self.mnt / "obs.tsv", "r+b"), errno.EROFS)
        _expect_errno(lambda: os.open(self.mnt / "obs.tsv", os.O_WRONLY), errno.EROFS)

    def test_append(self):
        _expect_errno(lambda: open(self.mnt / "obs.tsv", "ab"), errno.EROFS)

    def test_create(self):
        _expect_errno(lambda: open(self.mnt / "new.txt", "wb"), errno.EROFS)
        _expect_errno(lambda: open(self.mnt / "obs" / "new.txt", "xb"), errno.EROFS)

    def test_mkdir_rmdir(self):
        _expect_errno(lambda: os.mkdir(self.mnt / "newdir"), errno.EROFS)
        _expect_errno(lambda: os.rmdir(self.mnt / "obsm"), errno.EROFS, errno.ENOTEMPTY)
        _expect_errno(lambda: os.rmdir(self.mnt / "uns/params/nested/deep/empty"), errno.EROFS)

    def test_unlink_rename(self):
        _expect_errno(lambda: os.unlink(self.mnt / "obs.tsv"), errno.EROFS)
        _expect_errno(lambda: os.rename(self.mnt / "obs.tsv", self.mnt / "obs2.tsv"), errno.EROFS)
        _expect_errno(lambda: os.rename(self.mnt / "obs", self.mnt / "obs2"), errno.EROFS)

    def test_chmod_truncate_symlink_link(self):
        _expect_errno(lambda: os.chmod(self.mnt / "obs.tsv", 0o777), errno.EROFS)
        _expect_errno(lambda: os.truncate(self.mnt / "obs.tsv", 0), errno.EROFS)
        _expect_errno(lambda: os.symlink("obs.tsv", self.mnt / "link"), errno.EROFS)
        _expect_errno(lambda: os.link(self.mnt / "obs.tsv", self.mnt / "hard"), errno.EROFS, errno.EPERM)
        _expect_errno(lambda: os.utime(self.mnt / "obs.tsv", (0, 0)), errno.EROFS)

    def test_still_intact(self):
        tree = oracle.expected_tree(store_path(RO_STORE))
        assert (self.mnt / "obs.tsv").read_bytes() == tree["obs.tsv"]
        assert not (self.mnt / "new.txt").exists() and not (self.mnt / "newdir").exists()

    def test_unknown_enoent(self):
        _expect_errno(lambda: os.stat(self.mnt / "no_such_file"), errno.ENOENT)
        _expect_errno(lambda: open(self.mnt / "obs" / "no_such.txt", "rb"), errno.ENOENT)


# ----------------------------------------------------------------------------------------------------------------
# Bad stores: `annfs mount` exits non-zero quickly, one clear stderr line naming the file, nothing left mounted.
# ----------------------------------------------------------------------------------------------------------------

def _bad_stores(tmp: Path) -> dict[str, Path]:
    import h5py
    out = {}
    out["missing"] = tmp / "does_not_exist.h5ad"
    p = tmp / "not_hdf5.h5ad"
    p.write_text("this is not an HDF5 file\n" * 100)
    out["not_hdf5"] = p
    p = tmp / "truncated.h5ad"
    data = (FIXTURES / "csr_gzip.h5ad").read_bytes()
    p.write_bytes(data[: len(data) // 2])
    out["truncated"] = p
    p = tmp / "no_anndata.h5ad"
    with h5py.File(p, "w") as f:
        f["data"] = np.arange(10)
    out["no_anndata"] = p
    p = tmp / "absurd_shape.h5ad"
    shutil.copyfile(FIXTURES / "csr_gzip.h5ad", p)
    with h5py.File(p, "r+") as f:
        f["X"].attrs["shape"] = np.array([2**62, 2**62], dtype=np.int64)
    out["absurd_shape"] = p
    p = tmp / "empty_file.h5ad"
    p.write_bytes(b"")
    out["empty_file"] = p
    return out


BAD = ["missing", "not_hdf5", "truncated", "no_anndata", "absurd_shape", "empty_file"]


@need_bin
@pytest.mark.parametrize("kind", BAD)
def test_bad_store_mount(kind, tmp_path, tmp_mnt):
    if fuse_skip_reason():
        pytest.skip(fuse_skip_reason())
    bad = _bad_stores(tmp_path)[kind]
    t0 = time.monotonic()
    r = subprocess.run([str(ANNFS_BIN), "mount", str(bad), str(tmp_mnt)], capture_output=True, timeout=30)
    dt = time.monotonic() - t0
    assert r.returncode != 0, f"annfs mount of a {kind} store succeeded"
    assert dt < 10, f"took {dt:.1f}s to fail"
    err = r.stderr.decode(errors="replace").strip()
    assert err, "no error message"
    assert bad.name in err, f"stderr does not name the file: {err!r}"
    assert not is_mounted(tmp_mnt)


@need_bin
@pytest.mark.parametrize("kind", BAD)
def test_bad_store_cli(kind, tmp_path):
    bad = _bad_stores(tmp_path)[kind]
    for args in (["ls", str(bad)], ["info", str(bad)], ["cat", str(bad), "obs.tsv"]):
        r = subprocess.run([str(ANNFS_BIN), *args], capture_output=True, timeout=30)
        assert r.returncode != 0, f"annfs {args[0]} of a {kind} store succeeded"
        assert bad.name in r.stderr.decode(errors="replace"), r.stderr


# ----------------------------------------------------------------------------------------------------------------
# One corrupt element: the mount comes up, only that element's files fail (EIO), README.txt names it.
# ----------------------------------------------------------------------------------------------------------------

def make_corrupt_store(path: Path) -> str:
    """A gzip store whose obsm/X_pca chunk bytes are overwritten with 0xFF.  Returns the element path."""
    import anndata as ad
    import h5py
    import pandas as pd
    rng = np.random.default_rng(0)
    n, m = 30, 10
    a = ad.AnnData(X=rng.standard_normal((n, m)).astype(np.float32),
                   obs=pd.DataFrame({"k": np.arange(n)}, index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(m)]))
    a.obsm["X_pca"] = rng.standard_normal((n, 4))
    a.obsm["X_umap"] = rng.standard_normal((n, 2))
    a.write_h5ad(path, compression="gzip")
    with h5py.File(path, "r") as f:
        ds = f["obsm/X_pca"]
        infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    with open(path, "r+b") as fh:
        for ci in infos:
            fh.seek(ci.byte_offset)
            fh.write(b"\xff" * ci.size)
    with h5py.File(path, "r") as f:  # make sure the damage is detectable
        with pytest.raises(Exception):
            f["obsm/X_pca"][()]
    return "obsm/X_pca"


@need_fuse
def test_corrupt_element(tmp_path, tmp_mnt):
    store = tmp_path / "corrupt.h5ad"
    elem = make_corrupt_store(store)
    sha = store.read_bytes()
    with Mount(store, tmp_mnt) as m:
        for rel in ("obsm/X_pca.npy", "obsm/X_pca.tsv"):
            with pytest.raises(OSError) as ei:
                with open(tmp_mnt / rel, "rb") as f:
                    f.read()
            assert ei.value.errno == errno.EIO, (rel, ei.value)
        # everything else reads fine
        import anndata as ad
        assert (tmp_mnt / "obs.tsv").read_bytes().startswith(b"\tk\n")
        x = np.load(tmp_mnt / "X/dense.npy")
        assert x.shape == (30, 10)
        um = np.load(tmp_mnt / "obsm/X_umap.npy")
        assert um.shape == (30, 2)
        readme = (tmp_mnt / "README.txt").read_text()
        assert "X_pca" in readme, "README.txt should name the unreadable element"
        assert m.proc.poll() is None, "daemon died"
    assert store.read_bytes() == sha
