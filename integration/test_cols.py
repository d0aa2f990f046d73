"""Gene columns (issue 10) through real mounts: cols/, genes/, the transposed csc/ (of CSR) and csr/ (of CSC), the
transposed index (build on first access, bounded wait, stale/damaged index rebuilt, read-only index dirs) and
`annfs index`. Oracles: anndata, h5py + scipy (tocsc()/tocsr()), numpy."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from conftest import ANNFS_BIN, Mount, force_unmount, fuse_skip_reason, is_mounted, load_npy_threaded

pytestmark = pytest.mark.skipif(fuse_skip_reason() is not None, reason=str(fuse_skip_reason()))

NAMES = ["G0", "a/b", ".hidden", "index", "100%", "x.codes", "dup", "dup", "CD3E", ""] + [f"G{i}" for i in range(10, 40)]


def _messy_csr(n, m, seed, int64=False, dtype=np.float32):
    """CSR with unsorted indices, duplicates, explicit zeros, empty rows and columns."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, m, density=0.12, format="csr", random_state=seed, dtype=np.float64).astype(dtype)
    X = X.tolil()
    X[:, 5] = 0  # an empty column
    X[7, :] = 0  # an empty row
    X = X.tocsr()
    X.eliminate_zeros()
    indptr, indices, data = X.indptr.copy(), X.indices.copy(), X.data.copy()
    for r in range(0, n, 3):  # reverse some rows: unsorted indices
        a, b = indptr[r], indptr[r + 1]
        indices[a:b], data[a:b] = indices[a:b][::-1].copy(), data[a:b][::-1].copy()
    # Explicit zeros and a duplicate entry (row 2, same column twice).
    data[::11] = 0
    r = 2
    a, b = indptr[r], indptr[r + 1]
    if b > a:
        indices = np.insert(indices, b, indices[a])
        data = np.insert(data, b, dtype(1.25))
        indptr[r + 1:] += 1
    it = np.int64 if int64 else np.int32
    Y = sp.csr_matrix((data, indices, indptr), shape=(n, m))
    Y.indices, Y.indptr = indices.astype(it), indptr.astype(it)  # the constructor would narrow int64
    return Y


def make_cols_store(path: Path) -> Path:
    import anndata as ad
    import pandas as pd

    warnings.simplefilter("ignore")
    n, m = 120, len(NAMES)
    X = _messy_csr(n, m, 1)
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]), var=pd.DataFrame(index=NAMES))
    a.layers["i64"] = _messy_csr(n, m, 2, int64=True, dtype=np.float64)
    a.layers["csc_i8"] = sp.csc_matrix(np.random.default_rng(3).integers(-5, 5, (n, m)).astype(np.int8))
    a.layers["dense"] = np.random.default_rng(4).standard_normal((n, m))
    a.layers["bool"] = sp.random(n, m, density=0.2, format="csr", random_state=5).astype(bool)
    raw_var = pd.DataFrame(index=[f"R{i}" for i in range(m + 3)])
    raw = ad.AnnData(X=_messy_csr(n, m + 3, 6), obs=a.obs, var=raw_var)
    a.raw = raw
    a.write_h5ad(path)
    return path


def make_empty_store(path: Path) -> Path:
    import anndata as ad
    import pandas as pd

    warnings.simplefilter("ignore")
    X = sp.csr_matrix((9, 4), dtype=np.float32)
    ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(9)]),
               var=pd.DataFrame(index=list("abcd"))).write_h5ad(path)
    return path


def make_big_store(path: Path, n=300_000, m=400, density=0.02) -> Path:
    import anndata as ad
    import pandas as pd

    warnings.simplefilter("ignore")
    X = sp.random(n, m, density=density, format="csr", random_state=7, dtype=np.float32)
    ad.AnnData(X=X, obs=pd.DataFrame(index=np.arange(n).astype(str)),
               var=pd.DataFrame(index=[f"g{i}" for i in range(m)])).write_h5ad(path)
    return path


def stored(path: Path, group: str):
    """The stored sparse matrix as scipy builds it from the stored arrays (h5py)."""
    with h5py.File(path, "r") as f:
        g = f[group]
        shape = tuple(g.attrs["shape"])
        enc = g.attrs["encoding-type"]
        cls = sp.csr_matrix if enc == "csr_matrix" else sp.csc_matrix
        return cls((g["data"][:], g["indices"][:], g["indptr"][:]), shape=shape)


def dense_of(path: Path, group: str):
    with h5py.File(path, "r") as f:
        g = f[group]
        if isinstance(g, h5py.Dataset):
            return g[:]
    m = stored(path, group)
    return m.toarray()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def enoent(p: Path):
    with pytest.raises(FileNotFoundError):
        open(p, "rb").close()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("cols-stores")
    return {"main": make_cols_store(d / "main.h5ad"), "empty": make_empty_store(d / "empty.h5ad")}


@pytest.fixture(scope="module")
def main_mount(stores, tmp_path_factory):
    d = tmp_path_factory.mktemp("cols-mnt")
    with Mount(stores["main"], d / "mnt", "--index-dir", str(d / "idx")) as m:
        yield m


MATRICES = [("X", "/X"), ("layers/i64", "/layers/i64"), ("layers/bool", "/layers/bool"), ("raw/X", "/raw/X")]


@pytest.mark.parametrize("vdir,group", MATRICES)
def test_transposed_csc_equals_scipy_tocsc(main_mount, stores, vdir, group):
    want = stored(stores["main"], group).tocsc()
    d = main_mount.mnt / vdir / "csc"
    got = {k: np.load(d / f"{k}.npy") for k in ("data", "indices", "indptr")}
    assert same(got["data"], want.data), vdir
    assert same(got["indices"], want.indices), (vdir, got["indices"].dtype, want.indices.dtype)
    assert same(got["indptr"], want.indptr), vdir
    # Usable as is, memory-mapped.
    mm = sp.csc_matrix(tuple(np.load(d / f"{k}.npy", mmap_mode="r") for k in ("data", "indices", "indptr")),
                       shape=want.shape)
    assert (mm != want).nnz == 0


def test_transposed_csr_of_csc_equals_scipy_tocsr(main_mount, stores):
    want = stored(stores["main"], "/layers/csc_i8").tocsr()
    d = main_mount.mnt / "layers/csc_i8/csr"
    for k in ("data", "indices", "indptr"):
        assert same(np.load(d / f"{k}.npy"), getattr(want, k)), k


def test_stored_index_widths_differ(stores):
    with h5py.File(stores["main"], "r") as f:
        assert f["X/indices"].dtype == np.int32 and f["layers/i64/indices"].dtype == np.int64
        assert f["layers/i64/indptr"].dtype == np.int64


def _col_matrices(path: Path):
    out = {}
    for vdir, group in MATRICES + [("layers/csc_i8", "/layers/csc_i8"), ("layers/dense", "/layers/dense")]:
        out[vdir] = dense_of(path, group)
    return out


@pytest.mark.parametrize("sub", ["", "rows/10:95/", "rows/-7:/"])
def test_every_column_file_equals_the_matrix_column(main_mount, stores, sub):
    import anndata as ad

    warnings.simplefilter("ignore")
    a = ad.read_h5ad(stores["main"])
    mats = _col_matrices(stores["main"])
    assert same(mats["X"], a.X.toarray())
    rows = slice(None)
    if sub:
        s, e = sub[5:-1].split(":")
        rows = slice(int(s) if s else None, int(e) if e else None)
    for vdir, full in mats.items():
        M = full[rows]
        base = main_mount.mnt / sub / vdir / "cols"
        for j in range(M.shape[1]):
            col = np.load(base / f"{j}.npy")
            assert same(col, np.ascontiguousarray(M[:, j])), (sub, vdir, j)
            text = (base / f"{j}.txt").read_text().splitlines()
            back = np.array([{"True": 1, "False": 0}.get(t, t) for t in text]).astype(M.dtype) if M.dtype == bool \
                else np.array(text, dtype=M.dtype)
            assert same(back, np.ascontiguousarray(M[:, j])), (sub, vdir, j, text[:3])
        assert same(np.load(base / f"{-1}.npy"), np.ascontiguousarray(M[:, -1]))
        for s, e in [(0, M.shape[1]), (3, 17), (M.shape[1] - 1, M.shape[1])]:
            assert same(np.load(base / f"{s}:{e}.npy"), np.ascontiguousarray(M[:, s:e])), (sub, vdir, s, e)
        if M.dtype.kind in "fiu":
            mtx = scipy.io.mmread(str(base / "3:17.mtx"))
            assert mtx.shape == (M.shape[0], 14)
            # Text holds each value in the shortest form of its dtype: equal to float32 precision.
            np.testing.assert_allclose(sp.csr_matrix(mtx).toarray(), M[:, 3:17].astype(np.float64), rtol=1e-6)


def test_mtx_lists_stored_entries_of_the_columns(main_mount, stores):
    with h5py.File(stores["main"], "r") as f:
        idx = f["X/indices"][: f["X/indptr"][-1]]
    stored_nnz = int(((idx >= 3) & (idx < 17)).sum())  # explicit zeros and duplicates included
    body = (main_mount.mnt / "X/cols/3:17.mtx").read_text().splitlines()
    size = next(line for line in body if not line.startswith("%"))
    assert size.split() == ["120", "14", str(stored_nnz)]
    assert len(body) == 2 + stored_nnz


def test_genes_by_name(main_mount, stores):
    import anndata as ad

    warnings.simplefilter("ignore")
    a = ad.read_h5ad(stores["main"])
    X = a.X.toarray()
    files = {"G0": 0, "a%2Fb": 1, "%2Ehidden": 2, "inde%78": 3, "100%25": 4, "x.code%73": 5, "CD3E": 8, "%": 9,
             "G39": 39}
    for stem, j in files.items():
        assert same(np.load(main_mount.mnt / "X/genes" / f"{stem}.npy"), np.ascontiguousarray(X[:, j])), stem
        text = (main_mount.mnt / "X/genes" / f"{stem}.txt").read_text().split()
        assert same(np.array(text, dtype=np.float32), np.ascontiguousarray(X[:, j])), stem
    readme = (main_mount.mnt / "X/genes/README.txt").read_text()
    assert "dup\t6,7" in readme
    for bad in ["dup.npy", "dup.txt", "nosuch.npy", "a/b.npy", "index.npy", "G0.tsv", "G0", ".hidden.npy"]:
        assert not os.path.exists(main_mount.mnt / "X/genes" / bad), bad
    assert sorted(os.listdir(main_mount.mnt / "X/genes")) == ["README.txt"]
    # One-column .npy files ask for 128 KiB reads (numpy.load's buffered open reads st_blksize before the header);
    # everything else keeps the mount's 1 MiB.
    blk = lambda rel: os.stat(main_mount.mnt / rel).st_blksize
    assert [blk("X/genes/CD3E.npy"), blk("X/cols/8.npy"), blk("rows/5:9/X/genes/CD3E.npy")] == [128 << 10] * 3
    assert [blk("X/genes/CD3E.txt"), blk("X/cols/3:17.npy"), blk("X/csc/data.npy"), blk("obs.tsv")] == [1 << 20] * 4
    # raw/X/genes uses the raw var index; subset views keep var names and restrict rows.
    R = stored(stores["main"], "/raw/X").toarray()
    assert same(np.load(main_mount.mnt / "raw/X/genes/R41.npy"), np.ascontiguousarray(R[:, 41]))
    enoent(main_mount.mnt / "raw/X/genes/G0.npy")
    assert same(np.load(main_mount.mnt / "rows/5:9/X/genes/CD3E.npy"), np.ascontiguousarray(X[5:9, 8]))


def test_slice_and_name_rules(main_mount):
    c = main_mount.mnt / "X/cols"
    assert sorted(os.listdir(c)) == ["README.txt"]
    assert "cols/J.npy" in (c / "README.txt").read_text()
    n = len(NAMES)
    assert np.load(c / f"{-n}.npy").shape == (120,)
    assert np.load(c / ":.npy").shape == (120, n)
    assert np.load(c / "-3:.npy").shape == (120, 3)
    for bad in [f"{n}.npy", f"{-n - 1}.npy", "5:5.npy", "6:2.npy", f"0:{n + 1}.npy", "1:9:2.npy", "007.npy", "+5.npy",
                " 1.npy", "-0.npy", "3.tsv", "3.mtx", "3:5.txt", "3:5.tsv", "a.npy", "3", "3:5"]:
        assert not os.path.exists(c / bad), bad
    # No cols/ or genes/ where columns are not vars; no transposed csc/ in a row subset.
    assert not os.path.exists(main_mount.mnt / "rows/0:5/X/csc")
    assert os.path.exists(main_mount.mnt / "rows/0:5/X/cols/README.txt")


def test_nnz_zero(stores, tmp_path):
    with Mount(stores["empty"], tmp_path / "mnt", "--index-dir", str(tmp_path / "idx")) as m:
        want = stored(stores["empty"], "/X").tocsc()
        for k in ("data", "indices", "indptr"):
            assert same(np.load(m.mnt / "X/csc" / f"{k}.npy"), getattr(want, k)), k
        assert same(np.load(m.mnt / "X/cols/2.npy"), np.zeros(9, np.float32))
        assert same(np.load(m.mnt / "X/genes/d.npy"), np.zeros(9, np.float32))


def test_dense_columns_need_no_index(tmp_path):
    import anndata as ad
    import pandas as pd

    warnings.simplefilter("ignore")
    X = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    p = tmp_path / "dense.h5ad"
    ad.AnnData(X=X, var=pd.DataFrame(index=list("abcdef"))).write_h5ad(p)
    with Mount(p, tmp_path / "mnt", "--index-dir", str(tmp_path / "idx")) as m:
        assert same(np.load(m.mnt / "X/cols/4.npy"), np.ascontiguousarray(X[:, 4]))
        assert os.stat(m.mnt / "X/cols/4.npy").st_blksize == 128 << 10
        assert same(np.load(m.mnt / "X/genes/b.npy"), np.ascontiguousarray(X[:, 1]))
        assert same(np.load(m.mnt / "rows/10:20/X/cols/1:3.npy"), np.ascontiguousarray(X[10:20, 1:3]))
        assert not os.path.exists(m.mnt / "X/csc")
    assert list((tmp_path / "idx").glob("*.idx")) == []


def _run_index(store, idx, *extra):
    return subprocess.run([str(ANNFS_BIN), "index", str(store), "--index-dir", str(idx), *extra],
                          capture_output=True, text=True, timeout=300)


def test_annfs_index_then_up_to_date(stores, tmp_path):
    r = _run_index(stores["main"], tmp_path / "idx")
    assert r.returncode == 0, r.stderr
    assert "5 built, 0 up to date" in r.stderr, r.stderr
    files = sorted((tmp_path / "idx").glob("*.idx"))
    assert len(files) == 5, files  # X, layers i64, csc_i8, bool, raw/X
    assert "bytes written" in r.stderr and str(sum(f.stat().st_size for f in files)) in r.stderr, r.stderr
    r = _run_index(stores["main"], tmp_path / "idx")
    assert r.returncode == 0 and "0 built, 5 up to date" in r.stderr, r.stderr


def _ro_bind(src: Path, dst: Path):
    dst.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    r = subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], capture_output=True)
    if r.returncode != 0:
        subprocess.run(["umount", str(dst)])
        pytest.skip("cannot make a read-only bind mount here")


@pytest.mark.skipif(os.geteuid() != 0, reason="read-only bind mounts need root")
def test_read_only_index_dir(stores, tmp_path):
    empty, ro = tmp_path / "empty", tmp_path / "ro"
    empty.mkdir()
    _ro_bind(empty, ro)
    try:
        r = _run_index(stores["main"], ro)
        assert r.returncode != 0
        assert str(ro) in r.stderr and "Read-only file system" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr
        # No index and no way to write one: columns are scanned (correct) and the log says why.
        with Mount(stores["main"], tmp_path / "mnt0", "--index-dir", str(ro)) as m:
            X = stored(stores["main"], "/X").toarray()
            assert same(np.load(m.mnt / "X/cols/3.npy"), np.ascontiguousarray(X[:, 3]))
            assert not os.path.exists(m.mnt / "X/csc")
            assert "scanning" in m.stderr() and "not writable" in m.stderr(), m.stderr()
    finally:
        subprocess.run(["umount", str(ro)])
    # A read-only dir holding valid indexes is used as is.
    built = tmp_path / "built"
    assert _run_index(stores["main"], built).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in built.glob("*.idx")}
    _ro_bind(built, ro)
    try:
        with Mount(stores["main"], tmp_path / "mnt1", "--index-dir", str(ro), "--index-wait", "0") as m:
            want = stored(stores["main"], "/X").tocsc()
            assert same(np.load(m.mnt / "X/csc/indices.npy"), want.indices)
            assert same(np.load(m.mnt / "X/cols/11.npy"), np.ascontiguousarray(want[:, 11].toarray().ravel()))
            assert "scanning" not in m.stderr()
    finally:
        subprocess.run(["umount", str(ro)])
    assert before == {p.name: p.stat().st_mtime_ns for p in built.glob("*.idx")}


def _index_file(idx: Path, name="_X.idx") -> Path:
    (f,) = [p for p in idx.glob("*.idx") if p.name[16:] == name]
    return f


@pytest.mark.parametrize("damage", ["truncate", "flip_body", "flip_header", "garbage"])
def test_damaged_index_is_rebuilt(stores, tmp_path, damage):
    idx = tmp_path / "idx"
    assert _run_index(stores["main"], idx).returncode == 0
    f = _index_file(idx)
    good = f.read_bytes()
    b = bytearray(good)
    if damage == "truncate":
        b = b[: len(b) // 2]
    elif damage == "flip_body":
        b[len(b) // 2] ^= 0x40  # inside the data section
    elif damage == "flip_header":
        b[40] ^= 0x01
    else:
        b = bytearray(os.urandom(len(b)))
    f.write_bytes(bytes(b))
    want = stored(stores["main"], "/X").tocsc()
    with Mount(stores["main"], tmp_path / "mnt", "--index-dir", str(idx), "--index-wait", "60") as m:
        for k in ("data", "indices", "indptr"):
            assert same(np.load(m.mnt / "X/csc" / f"{k}.npy"), getattr(want, k)), (damage, k)
        for j in range(want.shape[1]):
            assert same(np.load(m.mnt / f"X/cols/{j}.npy"), np.ascontiguousarray(want[:, j].toarray().ravel()))
        if damage == "flip_body":
            assert "checksum mismatch" in m.stderr(), m.stderr()
    assert _index_file(idx).read_bytes() == good


def test_stale_index_is_rebuilt(tmp_path):
    p = tmp_path / "s.h5ad"
    make_empty_store(p)
    idx = tmp_path / "idx"
    assert _run_index(p, idx).returncode == 0
    old = _index_file(idx).read_bytes()
    # The store is replaced (same path, new content and identity).
    p.unlink()
    make_cols_store(p)
    want = stored(p, "/X").tocsc()
    with Mount(p, tmp_path / "mnt", "--index-dir", str(idx), "--index-wait", "60") as m:
        assert same(np.load(m.mnt / "X/csc/data.npy"), want.data)
        assert same(np.load(m.mnt / "X/cols/6.npy"), np.ascontiguousarray(want[:, 6].toarray().ravel()))
        assert "stale" in m.stderr(), m.stderr()
    assert _index_file(idx).read_bytes() != old


def test_many_readers_while_the_index_is_built(tmp_path):
    p = make_big_store(tmp_path / "big.h5ad")
    X = stored(p, "/X").tocsc()
    idx = tmp_path / "idx"
    cols = list(range(0, X.shape[1], 7))
    errors, eio, ok = [], [0], [0]
    lock = threading.Lock()
    states = []
    with Mount(p, tmp_path / "mnt", "--index-dir", str(idx), "--index-wait", "0", "--cache-size", "24M") as m:
        stop = time.monotonic() + 120

        def reader(k):
            todo = cols[k::8]
            while todo and time.monotonic() < stop:
                j = todo[0]
                try:
                    got = load_npy_threaded(m.mnt / f"X/cols/{j}.npy")
                except OSError as e:
                    if e.errno != errno.EIO:
                        errors.append(repr(e))
                        return
                    with lock:
                        eio[0] += 1
                    time.sleep(0.02)
                    continue
                if not same(got, np.ascontiguousarray(X[:, j].toarray().ravel())):
                    errors.append(f"column {j} differs")
                    return
                with lock:
                    ok[0] += 1
                todo.pop(0)

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            states.append(json.loads((m.mnt / ".annfs/stats.json").read_text())["index"]["matrices"].get("/X", {}))
            time.sleep(0.05)
        for t in threads:
            t.join()
        assert not errors, errors
        assert ok[0] == len(cols), (ok, eio)
        assert eio[0] > 0, "the index was ready before any reader waited: no EIO path exercised\n" + m.stderr()
        assert "index being built" in m.stderr()
        assert any(s.get("state") == "building" for s in states), states[:3]
        assert states[-1]["state"] == "ready" and states[-1]["percent"] == 100, states[-1]
        jobs = lambda: json.loads((m.mnt / ".annfs/stats.json").read_text())["prefetch_jobs"]
        before = jobs()
        for k in ("indices", "indptr", "data"):
            assert same(np.load(m.mnt / "X/csc" / f"{k}.npy"), getattr(X, k)), k
        # Streams of the transposed arrays read ahead; a column's first read loads all its later reads need, so
        # its file starts no read-ahead (jobs would only wake threads).
        time.sleep(0.3)
        streamed = jobs()
        assert streamed > before
        for j in cols[:10]:
            assert same(np.load(m.mnt / f"X/cols/{j}.npy"), np.ascontiguousarray(X[:, j].toarray().ravel()))
        time.sleep(0.3)
        assert jobs() == streamed
