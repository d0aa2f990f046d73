"""Issue 4 through real mounts: matrix.mtx, 10x/, rows/ slices, rows/S:E/ subset views, the sidecar index of text
sizes.  Oracles: anndata / numpy / scipy, and `rows_oracle` (exact bytes, written from docs/TREE.md, independently of
the Rust code).  Real clients on the same views (coreutils, R): `test_clients.py`.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import oracle
import rows_oracle as ro
from conftest import STORE_IDS, Mount, fuse_skip_reason, walk_files
from rows_mounts import assert_values, entries, mdirs, need_mount, shared_mount, store_path  # noqa: F401 (a fixture)
from rows_stores import EXTRA_STORES

warnings.simplefilter("ignore")

R_SKIP = None if shutil.which("Rscript") else "Rscript missing (scripts/setup.sh installs r-base-core r-cran-matrix)"

_TSV_CACHE: dict = {}


def rows_tsv(store, md: ro.MatrixDir, a: int, b: int) -> bytes:
    """ro.rows_tsv(md.dense, a, b), with the formatted lines of each matrix cached (big fixtures)."""
    key = (str(store), md.rel)
    if key not in _TSV_CACHE:
        _TSV_CACHE.clear()
        _TSV_CACHE[key] = [line.encode() + b"\n" for line in oracle.array_text_rows(md.dense)]
    return b"".join(_TSV_CACHE[key][a:b])


def read_checked(p: Path) -> bytes:
    """Read a file and check that stat's size equals the bytes read."""
    st = os.stat(p)
    data = p.read_bytes()
    assert st.st_size == len(data), f"{p}: st_size {st.st_size} != {len(data)} bytes read"
    return data


def first_diff(got: bytes, want: bytes) -> str:
    i = next((k for k, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
    return (f"{len(got)} vs {len(want)} bytes, first difference at byte {i}: "
            f"got {got[max(0, i - 40):i + 40]!r} want {want[max(0, i - 40):i + 40]!r}")


def slice_names(n: int, size: int = 0) -> list[str]:
    """A few valid names for n rows (fewer when the matrix is big: `size` = number of values)."""
    if size > 100_000:
        k = min(40, n)
        return [s for s in dict.fromkeys([":", f"{n // 3}:{n // 3 + k}", "-3:", "0:1"]) if ro.py_slice(s, n)]
    k = max(1, n // 3)
    cands = [":", "0:1", f"{n // 3}:{n // 3 + k}", "-3:", ":-1", "-5:-2", "1:", f":{n}", f"{n - 1}:"]
    return [s for s in dict.fromkeys(cands) if ro.py_slice(s, n)]


def index_names(n: int) -> list[str]:
    return [s for s in dict.fromkeys(["0", "-1", str(n // 2), str(-n)]) if ro.py_index(s, n) is not None]


def invalid_names(n: int) -> list[str]:
    return ["5:2", "3:3", f"0:{n + 1}", f"{n}:", f"{n}:{n + 1}", f"-{n + 1}:", "1:9:2", "::", "+5:6", "007:9",
            "0:07", " 1:2", "1:2 ", "1 :2", "abc", "a:b", "-0:3", "1.0:2", "0x1:2", "", "1_0:20", "\u0661:2",
            "99999999999999999999:", ":99999999999999999999", "-9223372036854775808:", "0:9223372036854775807",
            "-9223372036854775809:", "1e3:", "\t1:2", "1:2\n"]


def enoent(p: Path):
    with pytest.raises(OSError) as ei:
        os.stat(p)
    assert ei.value.errno == errno.ENOENT, f"{p}: {ei.value}"


def mmread(path):
    import scipy.io
    import scipy.sparse as sp
    m = scipy.io.mmread(str(path))  # noqa: F841
    return sp.coo_matrix(m)


def check_mmread(path: Path, want_dense: np.ndarray, want_dtype, nnz: int, what: str):
    """scipy.io.mmread of a mounted .mtx: field, nnz (= stored entries), values exactly (in the stored dtype).
    uint64 values above 2**63-1 are skipped: MatrixMarket `integer` readers (scipy, R) parse signed 64-bit."""
    if np.dtype(want_dtype) == np.uint64 and np.asarray(want_dense).size and \
            np.asarray(want_dense).max() > np.iinfo(np.int64).max:
        return
    m = mmread(path)
    kind = np.dtype(want_dtype).kind
    assert m.nnz == nnz, f"{what}: mmread nnz {m.nnz} != {nnz}"
    assert m.dtype.kind == {"b": "i", "u": "i"}.get(kind, kind), f"{what}: mmread dtype {m.dtype} for {want_dtype}"
    got = m.toarray()
    if kind == "b":
        got = got.astype(bool)
    elif kind in "fc":
        got = got.astype(want_dtype)  # the shortest text of the stored dtype parses back to the stored value
    assert_values(got, np.asarray(want_dense).astype(want_dtype) if kind != "b" else np.asarray(want_dense), what)


@pytest.fixture(params=STORE_IDS + list(EXTRA_STORES))
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


# --------------------------------------------------------------------------------------------------------------
# matrix.mtx, 10x/
# --------------------------------------------------------------------------------------------------------------

def test_matrix_mtx_exact_and_mmread(store, mounted):
    bad = []
    for md in mdirs(store):
        ent = entries(store, md)
        p = mounted.mnt / md.rel / "matrix.mtx"
        got = read_checked(p)
        want = ent.mtx()
        if got != want:
            bad.append(f"{md.rel}/matrix.mtx ({md.fmt} {md.dtype}): {first_diff(got, want)}")
            continue
        field, r, c, nnz = ro.parse_mtx_header(got)
        assert (field, r, c, nnz) == (ro.mtx_field(md.dtype), *md.shape, len(ent.texts))
        check_mmread(p, md.dense, md.dtype, len(ent.texts), f"{md.rel}/matrix.mtx")
    assert not bad, "\n".join(bad)


def test_10x_exact_and_scanpy(store, mounted):
    import scanpy as sc
    mds = [md for md in mdirs(store) if md.obs_var]
    if not mds:
        pytest.skip("no obs x var matrix")
    bad = []
    for md in mds:
        d = mounted.mnt / md.rel / "10x"
        assert sorted(os.listdir(d)) == ["barcodes.tsv", "genes.tsv", "matrix.mtx"], md.rel
        for name, want in (("matrix.mtx", entries(store, md).mtx(transpose=True)),
                           ("genes.tsv", ro.genes_tsv(md.var)), ("barcodes.tsv", ro.barcodes_tsv(md.obs))):
            got = read_checked(d / name)
            if got != want:
                bad.append(f"{md.rel}/10x/{name}: {first_diff(got, want)}")
        if bad or md.dtype.kind == "c" or 0 in md.shape or (md.dtype == np.uint64 and md.dense.max() >> 63):
            continue  # scanpy: no complex, no uint64 >= 2**63; pandas cannot read an empty barcodes.tsv
        a = sc.read_10x_mtx(d, var_names="gene_symbols", make_unique=False, cache=False)
        assert list(a.obs_names) == [str(x) for x in md.obs.index], f"{md.rel}: obs names"
        assert list(a.var_names) == [str(x) for x in md.var.index], f"{md.rel}: var names"
        ids = md.var["gene_ids"] if "gene_ids" in md.var.columns else md.var.index
        assert list(a.var["gene_ids"].astype(str)) == [str(x) for x in ids], f"{md.rel}: gene ids"
        # read_10x_mtx returns float32 (its default dtype): compare in float32, or in the stored dtype if narrower
        # (a float16's shortest text is not the float32 nearest to it); integers beyond 2**24 are rounded alike
        cmp_dt = md.dtype if md.dtype.kind == "f" and md.dtype.itemsize < 4 else np.float32
        assert_values(a.X.toarray().astype(cmp_dt), md.dense.astype(np.float32).astype(cmp_dt),
                      f"{md.rel}/10x via scanpy.read_10x_mtx")
        a2 = sc.read_10x_mtx(d, var_names="gene_ids", make_unique=False, cache=False)
        assert list(a2.var_names) == [str(x) for x in ids], f"{md.rel}: var_names='gene_ids'"
    assert not bad, "\n".join(bad)


def test_10x_v3_gzip_streams(store, mounted):
    """10x_v3/ (docs/FORMATS.md): gzip streams whose content is the 10x/ files (features: + `Gene Expression`);
    read by Python's gzip, `gzip -t`, `zcat`, and scanpy.read_10x_mtx."""
    import gzip
    import scanpy as sc
    mds = [md for md in mdirs(store) if md.obs_var]
    if not mds:
        pytest.skip("no obs x var matrix")
    if not (mounted.mnt / mds[0].rel / "10x_v3").exists():
        pytest.skip("this binary has no 10x_v3/")
    for md in mds:
        d, v2 = mounted.mnt / md.rel / "10x_v3", mounted.mnt / md.rel / "10x"
        assert sorted(os.listdir(d)) == ["barcodes.tsv.gz", "features.tsv.gz", "matrix.mtx.gz"], md.rel
        plain = {}
        for name in os.listdir(d):
            raw = read_checked(d / name)
            plain[name] = gzip.decompress(raw)
            r = subprocess.run(["gzip", "-t", str(d / name)], capture_output=True)
            assert r.returncode == 0, f"gzip -t {md.rel}/10x_v3/{name}: {r.stderr!r}"
            with open(d / name, "rb") as f:  # a reader that jumps to the end first (ISIZE, CRC)
                f.seek(-8, os.SEEK_END)
                assert f.read() == raw[-8:]
        assert plain["matrix.mtx.gz"] == (v2 / "matrix.mtx").read_bytes(), f"{md.rel}/10x_v3/matrix.mtx.gz"
        assert plain["barcodes.tsv.gz"] == (v2 / "barcodes.tsv").read_bytes(), f"{md.rel}/10x_v3/barcodes.tsv.gz"
        genes = (v2 / "genes.tsv").read_bytes().decode().split("\n")[:-1]
        assert plain["features.tsv.gz"].decode() == "".join(g + "\tGene Expression\n" for g in genes)
        z = subprocess.run(f"zcat '{d}/matrix.mtx.gz' | tail -n 2", shell=True, capture_output=True)
        assert z.returncode == 0 and z.stdout == b"".join(plain["matrix.mtx.gz"].splitlines(True)[-2:]), \
            f"zcat {md.rel}/10x_v3/matrix.mtx.gz | tail -n 2"
        if md.dtype.kind == "c" or 0 in md.shape or (md.dtype == np.uint64 and md.dense.max() >> 63):
            continue
        a = sc.read_10x_mtx(d, var_names="gene_symbols", make_unique=False, cache=False)
        cmp_dt = md.dtype if md.dtype.kind == "f" and md.dtype.itemsize < 4 else np.float32
        assert_values(a.X.toarray().astype(cmp_dt), md.dense.astype(np.float32).astype(cmp_dt),
                      f"{md.rel}/10x_v3 via scanpy.read_10x_mtx")
        assert list(a.obs_names) == [str(x) for x in md.obs.index]


# --------------------------------------------------------------------------------------------------------------
# rows/ in matrix directories
# --------------------------------------------------------------------------------------------------------------

def test_rows_listing_tiles_matrix(store, mounted):
    for md in mdirs(store):
        n = md.shape[0]
        d = mounted.mnt / md.rel / "rows"
        names = os.listdir(d)
        if n == 0:
            assert names == [], f"{md.rel}/rows of a 0-row matrix lists {names}"
            continue
        assert names and all(s.endswith(".npy") for s in names), f"{md.rel}/rows: {names[:5]}"
        spans = sorted(ro.py_slice(s[:-4], n) or (-1, -1) for s in names)
        assert (-1, -1) not in spans, f"{md.rel}/rows lists invalid names {names}"
        assert spans[0][0] == 0 and spans[-1][1] == n, f"{md.rel}/rows: {spans} does not cover 0..{n}"
        assert all(x[1] == y[0] for x, y in zip(spans, spans[1:])), f"{md.rel}/rows: gaps/overlaps {spans}"
        dense = md.dense
        parts = [np.load(d / f"{a}:{b}.npy", mmap_mode="r") for a, b in spans]
        for (a, b), part in zip(spans, parts):
            assert part.dtype == md.dtype, f"{md.rel}/rows/{a}:{b}.npy dtype {part.dtype}"
        assert_values(np.concatenate(parts), dense, f"{md.rel}/rows/* concatenated")
        # a glob sees the same names
        assert sorted(p.name for p in d.glob("*.npy")) == sorted(names)


def test_rows_slices(store, mounted):
    """numpy.load / numpy.loadtxt / pandas.read_csv / scipy mmread of rows/S:E.{npy,tsv,mtx} and rows/I.{npy,tsv}."""
    bad = []
    for md in mdirs(store):
        n = md.shape[0]
        dense = md.dense
        d = mounted.mnt / md.rel / "rows"
        ent = entries(store, md)
        for name in slice_names(n, dense.size):
            a, b = ro.py_slice(name, n)
            arr = np.load(d / f"{name}.npy")
            assert arr.dtype == md.dtype, f"{md.rel}/rows/{name}.npy dtype {arr.dtype} != {md.dtype}"
            assert_values(arr, dense[a:b], f"{md.rel}/rows/{name}.npy")
            assert os.stat(d / f"{name}.npy").st_size == len(oracle.npy_bytes(dense[a:b]))
            assert read_checked(d / f"{name}.npy") == oracle.npy_bytes(dense[a:b]), f"{md.rel}/rows/{name}.npy"
            tsv = read_checked(d / f"{name}.tsv")
            want = rows_tsv(store, md, a, b)
            if tsv != want:
                bad.append(f"{md.rel}/rows/{name}.tsv: {first_diff(tsv, want)}")
            else:
                back = pd.read_csv(d / f"{name}.tsv", header=None, sep="\t", float_precision="round_trip",
                                   na_filter=False if md.dtype.kind == "b" else True)
                assert back.shape == (b - a, md.shape[1])
                if md.dtype.kind in "iuf":
                    got = np.stack([back[c].to_numpy().astype(md.dtype) for c in back.columns], axis=1)
                    assert_values(got, dense[a:b], f"{md.rel}/rows/{name}.tsv pandas")
                    lt = np.loadtxt(d / f"{name}.tsv", delimiter="\t", dtype=md.dtype, ndmin=2)
                    assert_values(lt, dense[a:b], f"{md.rel}/rows/{name}.tsv loadtxt")
                elif md.dtype.kind == "b":
                    assert_values(back.to_numpy() == True, dense[a:b], f"{md.rel}/rows/{name}.tsv pandas")  # noqa: E712
            mtx = read_checked(d / f"{name}.mtx")
            want = ent.mtx(rows=(a, b))
            if mtx != want:
                bad.append(f"{md.rel}/rows/{name}.mtx: {first_diff(mtx, want)}")
            else:
                check_mmread(d / f"{name}.mtx", dense[a:b], md.dtype, ro.parse_mtx_header(want)[3],
                             f"{md.rel}/rows/{name}.mtx")
        for name in index_names(n):
            i = ro.py_index(name, n)
            arr = np.load(d / f"{name}.npy")
            assert arr.ndim == 1, f"{md.rel}/rows/{name}.npy is {arr.ndim}-D"
            assert_values(arr, dense[i], f"{md.rel}/rows/{name}.npy")
            assert arr.dtype == md.dtype
            tsv = read_checked(d / f"{name}.tsv")
            want = rows_tsv(store, md, i, i + 1)
            if tsv != want:
                bad.append(f"{md.rel}/rows/{name}.tsv: {first_diff(tsv, want)}")
    assert not bad, "\n".join(bad[:20])


def test_invalid_names_enoent(store, mounted):
    mds = mdirs(store)
    for md in mds[:3]:
        n = md.shape[0]
        d = mounted.mnt / md.rel / "rows"
        for name in invalid_names(n):
            for ext in (".npy", ".tsv", ".mtx"):
                enoent(d / f"{name}{ext}")
        for name in ("0.mtx", "0:1.csv", "0:1", "0:1.npy.npy", "0:1.NPY", f"{n}.npy", f"-{n + 1}.tsv", "00.npy",
                     "+1.npy", "-0.tsv", ".npy", "0:1/"):
            enoent(d / name)
    import anndata as ad
    n = ad.read_h5ad(store, backed="r").n_obs
    root = mounted.mnt / "rows"
    for name in invalid_names(n) + ["0", "-1", "0:1.npy"]:
        if name:  # rows/"" is rows/ itself
            enoent(root / name)


def test_root_rows_listing(store, mounted):
    root = mounted.mnt / "rows"
    assert os.listdir(root) == ["README.txt"]
    assert read_checked(root / "README.txt")
    import anndata as ad
    if ad.read_h5ad(store, backed="r").n_obs == 0:
        enoent(root / "0:1")
        enoent(root / ":")
        return
    sub = root / "0:1"
    assert sub.is_dir()
    assert "rows" not in os.listdir(sub), "a subset view has no rows/ of its own"
    enoent(sub / "rows")
    assert "0:1" not in os.listdir(root), "rows/ lists only README.txt, even after a lookup"


# --------------------------------------------------------------------------------------------------------------
# rows/S:E/ subset views against adata[S:E]
# --------------------------------------------------------------------------------------------------------------

def subset_expected(store, a: int, b: int, tmp: Path) -> dict[str, bytes]:
    """Expected bytes of every oracle file under rows/a:b/ (see ro.subset_expected)."""
    return ro.subset_expected(store, slice(a, b), tmp, mdirs(store))


def subset_ranges(n: int) -> list[tuple[str, int, int]]:
    a = n // 4
    b = min(n, a + max(1, n // 3))
    return [(f"{a}:{b}", a, b)]


def test_subset_view_equals_adata_slice(store, mounted, tmp_path):
    import anndata as ad
    n = ad.read_h5ad(store, backed="r").n_obs
    if n == 0:
        pytest.skip("no rows: no subset view (test_root_rows_listing checks ENOENT)")
    for name, a, b in subset_ranges(n):
        want = subset_expected(store, a, b, tmp_path)
        root = mounted.mnt / "rows" / name
        files, _ = walk_files(root)
        missing = sorted(set(want) - files)
        extra = sorted(f for f in files - set(want) if not oracle.is_allowed_extra(f))
        bad = []
        for rel in sorted(set(want) & files):
            got = read_checked(root / rel)
            if got != want[rel]:
                bad.append(f"rows/{name}/{rel}: {first_diff(got, want[rel])}")
        assert not (missing or extra or bad), (f"missing {missing[:10]}\nextra {extra[:10]}\n" + "\n".join(bad[:15]))


def test_subset_view_matrices(store, mounted):
    """Every matrix of rows/S:E/ (incl. negative / omitted ends): dense.npy, matrix.mtx, 10x/, its own rows/."""
    import anndata as ad
    n = ad.read_h5ad(store, backed="r").n_obs
    obs_all = ad.read_h5ad(store).obs
    names = [s for s in dict.fromkeys([subset_ranges(n)[0][0], "-3:", ":2"]) if ro.py_slice(s, n)]
    bad = []
    for name in names:
        a, b = ro.py_slice(name, n)
        root = mounted.mnt / "rows" / name
        assert read_checked(root / "obs" / "index.txt") == ro.barcodes_tsv(obs_all.iloc[a:b])
        for md in mdirs(store):
            if md.kind not in ("X", "layer", "raw", "obsm", "obsp"):
                continue
            sq = md.kind == "obsp"
            dense = md.dense[a:b, a:b] if sq else md.dense[a:b]
            d = root / md.rel
            assert_values(np.load(d / "dense.npy"), dense, f"rows/{name}/{md.rel}/dense.npy")
            got = read_checked(d / "matrix.mtx")
            want = entries(store, md).mtx(rows=(a, b), square=sq)
            if got != want:
                bad.append(f"rows/{name}/{md.rel}/matrix.mtx: {first_diff(got, want)}")
            else:
                check_mmread(d / "matrix.mtx", dense, md.dtype, ro.parse_mtx_header(want)[3], f"rows/{name}/{md.rel}")
            sub_n = b - a
            lst = sorted(ro.py_slice(s[:-4], sub_n) for s in os.listdir(d / "rows"))
            assert lst[0][0] == 0 and lst[-1][1] == sub_n
            assert_values(np.load(d / "rows" / "-1.npy"), dense[-1], f"rows/{name}/{md.rel}/rows/-1.npy")
            if md.obs_var:
                assert read_checked(d / "10x" / "barcodes.tsv") == ro.barcodes_tsv(obs_all.iloc[a:b])
                got = read_checked(d / "10x" / "matrix.mtx")
                want = entries(store, md).mtx(rows=(a, b), transpose=True)
                if got != want:
                    bad.append(f"rows/{name}/{md.rel}/10x/matrix.mtx: {first_diff(got, want)}")
    assert not bad, "\n".join(bad[:20])


# --------------------------------------------------------------------------------------------------------------
# stat sizes, random reads, random slices (seeded; the seed is the store name)
# --------------------------------------------------------------------------------------------------------------

def test_random_slices_and_ranges(store, mounted):
    mds = [md for md in mdirs(store) if md.shape[0] > 0]
    if not mds:
        pytest.skip("no matrix with rows")
    rng = random.Random(zlib.crc32(store.name.encode()))
    bad = []
    for md in mds:
        n = md.shape[0]
        ent = entries(store, md)
        views = {f"{md.rel}/matrix.mtx": ent.mtx()}
        if md.obs_var:
            views[f"{md.rel}/10x/matrix.mtx"] = ent.mtx(transpose=True)
        for _ in range(4):
            a = rng.randrange(0, n)
            b = rng.randrange(a + 1, n + 1)
            na = str(a) if rng.random() < 0.7 else str(a - n)
            nb = str(b) if b < n and rng.random() < 0.7 else (str(b - n) if b < n else "")
            name = f"{na}:{nb}"
            assert ro.py_slice(name, n) == (a, b), name
            views[f"{md.rel}/rows/{name}.tsv"] = rows_tsv(store, md, a, b)
            views[f"{md.rel}/rows/{name}.mtx"] = ent.mtx(rows=(a, b))
        for rel, want in views.items():
            p = mounted.mnt / rel
            if os.stat(p).st_size != len(want):
                bad.append(f"{rel}: st_size {os.stat(p).st_size} != {len(want)}")
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                for _ in range(12):
                    off = rng.randrange(0, len(want) + 16)
                    ln = rng.choice([1, 17, 4096, 65536, 300000, rng.randrange(1, len(want) + 2)])
                    got = os.pread(fd, ln, off)
                    if got != want[off:off + ln]:
                        bad.append(f"{rel} pread [{off}, +{ln}): {first_diff(got, want[off:off + ln])}")
                        break
            finally:
                os.close(fd)
    assert not bad, "\n".join(bad[:20])


# --------------------------------------------------------------------------------------------------------------
# the sidecar index (--cache-dir)
# --------------------------------------------------------------------------------------------------------------

def test_sidecar_remembers_sizes(need_mount, tmp_path):
    store = store_path("real_pbmc68k_reduced_legacy")
    cache = tmp_path / "cache"
    rel = "X/matrix.mtx"
    md = [x for x in mdirs(store) if x.rel == "X"][0]
    want = entries(store, md).mtx()
    with Mount(store, tmp_path / "m1", "--cache-dir", str(cache)) as m:
        size1 = os.stat(m.mnt / rel).st_size
        assert size1 == len(want)
    layouts = list(cache.rglob("*.layouts"))
    assert layouts, f"no *.layouts in {cache}: {[str(p) for p in cache.rglob('*')]}"
    before = {p: p.read_bytes() for p in layouts}
    assert any(rel.encode() in b for b in before.values()), "the sidecar does not mention X/matrix.mtx"
    with Mount(store, tmp_path / "m2", "--cache-dir", str(cache)) as m:
        assert os.stat(m.mnt / rel).st_size == size1
        with open(m.mnt / rel, "rb") as f:
            f.seek(-100, os.SEEK_END)
            assert f.read() == want[-100:]
        assert (m.mnt / rel).read_bytes() == want
    # a corrupt sidecar costs a recomputation, never a wrong size
    for p in layouts:
        p.write_bytes(b"garbage\n" + before[p][: len(before[p]) // 2])
    with Mount(store, tmp_path / "m3", "--cache-dir", str(cache)) as m:
        assert os.stat(m.mnt / rel).st_size == size1
        assert (m.mnt / rel).read_bytes() == want


# --------------------------------------------------------------------------------------------------------------
# A size being computed does not block other requests; the sidecar follows the store's identity
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dense_store(tmp_path_factory):
    from rows_stores import make_dense_store
    return make_dense_store(tmp_path_factory.mktemp("dense") / "dense.h5ad")


def test_size_computation_does_not_block(need_mount, dense_store, tmp_path):
    """While one user's `stat X/matrix.mtx` computes its size (one pass over 10M values), first lookups of other
    files -- in the same directory too -- answer at once (issue 4: 'other requests keep being served')."""
    import threading
    import time
    with Mount(dense_store, tmp_path / "m", "--cache-dir", str(tmp_path / "cache")) as m:
        done = {}

        def big():
            t = time.perf_counter()
            os.stat(m.mnt / "X" / "matrix.mtx")
            done["t"] = time.perf_counter() - t

        th = threading.Thread(target=big)
        th.start()
        time.sleep(0.3)
        lat = {}
        for rel in ("obs/index.txt", "X/dense.npy", "X/10x/barcodes.tsv", "X/rows/0:10.npy"):
            t = time.perf_counter()
            os.stat(m.mnt / rel)
            lat[rel] = (round(time.perf_counter() - t, 3), "t" in done)
        th.join()
        if done["t"] < 0.8:
            pytest.skip(f"size computed too fast ({done['t']:.2f}s) to observe blocking")
        slow = {k: v for k, v in lat.items() if v[0] > 0.5}
        assert not slow, (f"first lookups blocked while X/matrix.mtx's size was computed ({done['t']:.1f}s): "
                          f"{slow} (seconds, size finished before?)")


def test_sidecar_follows_store_identity(need_mount, tmp_path):
    """A store replaced by another one (same path, same file size, new inode/mtime) gets the new size, not the
    remembered one (reference: a mount with an empty cache directory)."""
    from rows_stores import make_dense_store
    store = make_dense_store(tmp_path / "s.h5ad", n=4000)
    cache = tmp_path / "cache"
    rel = "X/matrix.mtx"
    with Mount(store, tmp_path / "m1", "--cache-dir", str(cache)) as m:
        s1 = os.stat(m.mnt / rel).st_size
    assert list(cache.rglob("*.layouts"))
    other = make_dense_store(tmp_path / "other.h5ad", n=4000, seed=1)
    assert other.stat().st_size == store.stat().st_size
    os.replace(other, store)
    with Mount(store, tmp_path / "ref", "--cache-dir", str(tmp_path / "empty")) as m:
        want_size = os.stat(m.mnt / rel).st_size
        with open(m.mnt / rel, "rb") as f:
            f.seek(-300, os.SEEK_END)
            want_tail = f.read()
    assert want_size != s1
    with Mount(store, tmp_path / "m2", "--cache-dir", str(cache)) as m:
        assert os.stat(m.mnt / rel).st_size == want_size
        with open(m.mnt / rel, "rb") as f:
            f.seek(-300, os.SEEK_END)
            assert f.read() == want_tail
