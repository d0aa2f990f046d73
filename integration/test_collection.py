"""Issue 12: collections -- `annfs mount DIR MNT` over a directory of stores, through real mounts.

Nested directories with mixed h5ad / Zarr stores (each store's files equal the oracle's rendering of its h5ad),
other files hidden, a broken store among good ones (only its own directory fails, with a README.txt saying why),
a store added and removed while mounted (listings follow within the TTL), `.annfs/collection.tsv` against anndata,
`.annfs/stats.json` counting opened stores, `annfs ls`/`cat` on a collection, 1,000 small stores mounting with
none opened until touched (mount time reported against a single-store mount in the same run), idle stores closed
(their files closed in the daemon) and reopened, and gene columns of a collection's stores from indexes built by
`annfs index DIR`.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import oracle
from conftest import FIXTURES, Mount, mount_stats as stats, need_fuse, run_annfs, walk_files

ZARR = FIXTURES / "zarr"
LISTING_TTL = 1.0


def make_collection(root: Path) -> Path:
    (root / "study1" / "deep").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    shutil.copy(FIXTURES / "csr_gzip.h5ad", root / "a.h5ad")
    shutil.copy(FIXTURES / "dense_f32.h5ad", root / "study1" / "b.h5ad")
    shutil.copytree(ZARR / "csc_lzf_int64.v3.zarr", root / "study1" / "deep" / "c.zarr")
    shutil.copytree(ZARR / "scanpy_write.v2.zarr", root / "d.zarr")
    (root / "notes.txt").write_text("not a store\n")
    (root / ".hidden.h5ad").write_bytes((FIXTURES / "uns_edge.h5ad").read_bytes())
    (root / "broken.h5ad").write_bytes(b"this is not an HDF5 file\n" * 100)
    return root


# relative path in the collection -> the fixture whose oracle tree it must show
TWINS = {"a.h5ad": "csr_gzip", "study1/b.h5ad": "dense_f32", "study1/deep/c.zarr": "csc_lzf_int64",
         "d.zarr": "scanpy_write"}


@need_fuse
def test_tree_of_a_collection(tmp_path):
    src = make_collection(tmp_path / "src")
    with Mount(src, tmp_path / "mnt") as m:
        mnt = m.mnt
        assert stats(mnt)["stores_opened"] == 0
        entries = {e.name: e.is_dir() for e in os.scandir(mnt)}
        assert entries == {"README.txt": False, ".annfs": True, "a.h5ad": True, "d.zarr": True, "study1": True,
                           "empty_dir": True, "broken.h5ad": True}
        assert sorted(os.listdir(mnt / "study1")) == ["b.h5ad", "deep"]
        assert os.listdir(mnt / "study1" / "deep") == ["c.zarr"]
        assert os.listdir(mnt / "empty_dir") == []
        assert stats(mnt)["stores_opened"] == 0, "listing opens no store"
        assert b"collection" in (mnt / "README.txt").read_bytes()
        for rel, fixture in TWINS.items():
            want = oracle.expected_tree(FIXTURES / f"{fixture}.h5ad")
            files, _ = walk_files(mnt / rel)
            assert set(want) <= files, (rel, sorted(set(want) - files)[:5])
            bad = [f for f in sorted(want) if (mnt / rel / f).read_bytes() != want[f]]
            assert not bad, (rel, bad[:10])
        # where/ works inside a collection's store too
        assert "is_doublet=True" in os.listdir(mnt / "a.h5ad" / "where")
        # the broken store fails only its own directory
        assert os.listdir(mnt / "broken.h5ad") == ["README.txt"]
        why = (mnt / "broken.h5ad" / "README.txt").read_text()
        assert "broken.h5ad" in why and "could not be opened" in why and "HDF5" in why
        for hidden in ("notes.txt", ".hidden.h5ad"):
            assert not (mnt / hidden).exists()
        s = stats(mnt)
        assert s["stores_opened"] == len(TWINS) and s["stores_failed"] == 1, s


@need_fuse
def test_collection_tsv(tmp_path):
    import anndata as ad
    src = make_collection(tmp_path / "src")
    with Mount(src, tmp_path / "mnt") as m:
        data = (m.mnt / ".annfs" / "collection.tsv").read_bytes()
        assert os.stat(m.mnt / ".annfs" / "collection.tsv").st_size == len(data)
        lines = data.decode().splitlines()
        assert lines[0] == "path\tformat\tn_obs\tn_vars\tsize\tobs_columns\terror"
        rows = {r.split("\t")[0]: r.split("\t") for r in lines[1:]}
        assert set(rows) == set(TWINS) | {"broken.h5ad"}
        for rel, fixture in TWINS.items():
            a = ad.read_h5ad(FIXTURES / f"{fixture}.h5ad")
            _, fmt, n_obs, n_vars, size, cols, err = rows[rel]
            assert fmt == ("zarr" if rel.endswith(".zarr") else "hdf5")
            assert (int(n_obs), int(n_vars)) == a.shape, rel
            assert cols == ",".join(map(str, a.obs.columns)), rel
            p = src / rel
            want_size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            assert int(size) == want_size and err == "", rel
        broken = rows["broken.h5ad"]
        assert broken[2:4] == ["NA", "NA"] and "HDF5" in broken[6]
    # `annfs info DIR` prints the root README and the same table, without a mount.
    r = run_annfs("info", src)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = r.stdout.decode()
    assert str(src) in out and out.endswith("collection.tsv:\n" + data.decode()), out[-500:]


@need_fuse
def test_store_added_and_removed_while_mounted(tmp_path):
    src = make_collection(tmp_path / "src")
    with Mount(src, tmp_path / "mnt") as m:
        study = m.mnt / "study1"
        assert "new.h5ad" not in os.listdir(study)
        shutil.copy(FIXTURES / "uns_edge.h5ad", src / "study1" / "new.h5ad")
        shutil.copytree(ZARR / "uns_edge.v2.zarr", src / "new.zarr")
        time.sleep(LISTING_TTL + 0.3)
        assert "new.h5ad" in os.listdir(study) and "new.zarr" in os.listdir(m.mnt)
        want = oracle.expected_tree(FIXTURES / "uns_edge.h5ad")
        for rel in ("obs.tsv", "X/dense.npy"):
            assert (study / "new.h5ad" / rel).read_bytes() == want[rel]
            assert (m.mnt / "new.zarr" / rel).read_bytes() == want[rel]
        (src / "study1" / "new.h5ad").unlink()
        shutil.rmtree(src / "new.zarr")
        time.sleep(LISTING_TTL + 0.3)
        assert "new.h5ad" not in os.listdir(study) and "new.zarr" not in os.listdir(m.mnt)
        assert "b.h5ad" in os.listdir(study)


@need_fuse
def test_thousand_stores_mount_without_opening(tmp_path):
    src = tmp_path / "many"
    one = FIXTURES / "empty_obs_no_x.h5ad"
    for g in range(10):
        d = src / f"group{g}"
        d.mkdir(parents=True)
        for i in range(100):
            shutil.copyfile(one, d / f"s{i:03d}.h5ad")

    def mount_seconds(store: Path, mnt: Path) -> tuple[float, Mount]:
        t = time.perf_counter()
        m = Mount(store, mnt).start()
        return time.perf_counter() - t, m

    single, m1 = mount_seconds(one, tmp_path / "mnt1")
    m1.stop()
    coll, m = mount_seconds(src, tmp_path / "mnt")
    try:
        t = time.perf_counter()
        names = [n for g in sorted(os.listdir(m.mnt)) if g.startswith("group") for n in os.listdir(m.mnt / g)]
        listing = time.perf_counter() - t
        assert len(names) == 1000
        assert stats(m.mnt)["stores_opened"] == 0, "no store is opened by mounting or listing"
        t = time.perf_counter()
        assert all(os.stat(m.mnt / "group7" / n).st_mode & 0o040000 for n in os.listdir(m.mnt / "group7"))
        stat_all = time.perf_counter() - t
        assert stats(m.mnt)["stores_opened"] == 0, "stat of a store's directory (ls -l) opens nothing"
        for i in (0, 57, 99):
            assert (m.mnt / "group3" / f"s{i:03d}.h5ad" / "README.txt").exists()
        assert stats(m.mnt)["stores_opened"] == 3
        print(f"\n1,000 stores: mount {coll:.3f} s (single store {single:.3f} s, ratio {coll / single:.2f}); "
              f"listing 11 directories {listing:.3f} s; stat of 100 stores {stat_all:.3f} s")
        # Mounting is independent of the number of stores: within a small factor of mounting one store.
        assert coll < 5 * single, (coll, single)
    finally:
        m.stop()


def test_cli_ls_and_cat_on_a_collection(tmp_path):
    src = make_collection(tmp_path / "src")
    r = run_annfs("ls", src)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert set(r.stdout.decode().splitlines()) == {"README.txt", ".annfs/", "a.h5ad/", "broken.h5ad/", "d.zarr/",
                                                   "empty_dir/", "study1/"}
    r = run_annfs("cat", src, "study1/b.h5ad/obs.tsv")
    assert r.returncode == 0 and r.stdout == oracle.expected_tree(FIXTURES / "dense_f32.h5ad")["obs.tsv"]
    r = run_annfs("ls", src, "study1/deep")
    assert r.stdout.decode().splitlines() == ["c.zarr/"]
    r = run_annfs("cat", src, "broken.h5ad/README.txt")
    assert r.returncode == 0 and b"could not be opened" in r.stdout


def _store_files_held(pid: int, src: Path) -> set[str]:
    """The files below `src` the daemon holds open."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(src) + "/"):
            held.add(target)
    return held


def _eventually(cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@need_fuse
def test_idle_stores_are_closed_and_reopened(tmp_path):
    src = make_collection(tmp_path / "src")
    wants = {rel: oracle.expected_tree(FIXTURES / f"{fx}.h5ad")["obs.tsv"] for rel, fx in TWINS.items()}
    with Mount(src, tmp_path / "mnt", "--store-idle", "1") as m:
        pid = m.proc.pid
        for rel, want in wants.items():
            assert (m.mnt / rel / "obs.tsv").read_bytes() == want, rel
        s = stats(m.mnt)
        assert s["stores_open"] == len(TWINS) and s["stores_opened"] == len(TWINS), s
        held = _store_files_held(pid, src)
        assert {str(src / "a.h5ad"), str(src / "study1" / "b.h5ad")} <= held, held
        # Idle for a second: closed, the kernel told to forget their entries, and their files closed.
        assert _eventually(lambda: stats(m.mnt)["stores_open"] == 0), stats(m.mnt)
        assert stats(m.mnt)["stores_closed"] == len(TWINS)
        assert _eventually(lambda: not _store_files_held(pid, src)), _store_files_held(pid, src)
        # The next access opens them again and serves the same bytes.
        for rel, want in wants.items():
            assert (m.mnt / rel / "obs.tsv").read_bytes() == want, rel
        assert stats(m.mnt)["stores_opened"] == 2 * len(TWINS)


@need_fuse
def test_a_failed_open_is_tried_again(tmp_path):
    """A store that fails to open (here: a Zarr array's metadata being rewritten, which changes neither the
    store directory's mtime nor its size) shows why in its README; once the failure is --store-idle old, the
    next access opens it again, and after the repair it serves the same bytes as the store mounted alone."""
    src = tmp_path / "src"
    src.mkdir()
    store = src / "b.zarr"
    shutil.copytree(FIXTURES / "zarr" / "csr_gzip.v2.zarr", store)
    (store / ".zmetadata").unlink()  # metadata read file by file
    zarray = store / "X" / "data" / ".zarray"
    good = zarray.read_bytes()
    version = os.stat(store).st_mtime_ns
    zarray.write_bytes(b"{ not json")
    with Mount(src, tmp_path / "mnt", "--store-idle", "1") as m:
        readme = (m.mnt / "b.zarr" / "README.txt").read_text()
        assert "could not be opened" in readme, readme
        zarray.write_bytes(good)
        assert os.stat(store).st_mtime_ns == version
        assert _eventually(lambda: "X" in os.listdir(m.mnt / "b.zarr")), os.listdir(m.mnt / "b.zarr")
        with Mount(store, tmp_path / "alone") as alone:
            for rel in ("X/csr/data.npy", "X/csr/indices.npy", "obs.tsv"):
                assert (m.mnt / "b.zarr" / rel).read_bytes() == (alone.mnt / rel).read_bytes(), rel


@need_fuse
def test_an_open_file_keeps_its_store_open(tmp_path):
    src = make_collection(tmp_path / "src")
    want = oracle.expected_tree(FIXTURES / "csr_gzip.h5ad")["obs.tsv"]
    with Mount(src, tmp_path / "mnt", "-o", "store_idle=0.5") as m:
        f = open(m.mnt / "a.h5ad" / "obs.tsv", "rb")
        try:
            (m.mnt / "study1" / "b.h5ad" / "obs.tsv").read_bytes()
            assert _eventually(lambda: stats(m.mnt)["stores_closed"] == 1), stats(m.mnt)
            time.sleep(1.5)
            s = stats(m.mnt)
            assert s["stores_open"] == 1 and s["stores_closed"] == 1, s
            assert str(src / "a.h5ad") in _store_files_held(m.proc.pid, src)
            assert f.read() == want
        finally:
            f.close()
        assert _eventually(lambda: stats(m.mnt)["stores_open"] == 0), stats(m.mnt)


@need_fuse
def test_gene_columns_of_a_collection(tmp_path):
    import h5py
    import numpy as np
    import scipy.sparse as sp

    src = make_collection(tmp_path / "src")
    idx = tmp_path / "idx"
    r = run_annfs("index", src, "--index-dir", idx, timeout=300)
    err = r.stderr.decode(errors="replace")
    # The broken store is reported and skipped; the others are indexed; the command fails at the end.
    assert r.returncode != 0 and "broken.h5ad: skipped" in err and "1 store(s)" in err, err
    assert "a.h5ad/X: built" in err, err
    built = sorted(idx.glob("*.idx"))
    assert built, err
    r = run_annfs("index", src, "--index-dir", idx, timeout=300)
    assert f"0 built, {len(built)} up to date" in r.stderr.decode(), r.stderr.decode()

    with h5py.File(FIXTURES / "csr_gzip.h5ad", "r") as f:
        g = f["X"]
        X = sp.csr_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=tuple(g.attrs["shape"]))
    want = X.tocsc()
    with Mount(src, tmp_path / "mnt", "-o", f"index_dir={idx}", "--index-wait", "0") as m:
        for part in ("data", "indices", "indptr"):
            got = np.load(m.mnt / "a.h5ad" / "X" / "csc" / f"{part}.npy")
            assert got.tobytes() == getattr(want, part).tobytes(), part
        col = np.load(m.mnt / "a.h5ad" / "X" / "cols" / "3.npy")
        assert col.tobytes() == np.ascontiguousarray(X[:, 3].toarray().ravel()).tobytes()
        assert "scanning" not in m.stderr(), m.stderr()
    assert sorted(idx.glob("*.idx")) == built, "the mount used the indexes as built"
