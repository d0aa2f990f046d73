"""Issue 12: metadata subsets `where/<col>=<value>/` through real mounts, with anndata as the oracle.

Every file of `where/<col>=<value>/` equals the oracle's rendering of `adata[adata.obs[col] == value]`
(rows_oracle.subset_expected: categories kept, stored codes gathered, scipy's row selection of stored CSR
arrays), for categorical (string, numeric, legacy `uns/<col>_categories`), bool and nullable-boolean columns, h5ad
and zarr; compositions equal nested masks; rows/ inside where/ and where/ inside rows/; `ls where/` and
where/README.txt list the names with their cell counts; empty selections and non-category names are ENOENT.
Names are derived here from docs/TREE.md and docs/FORMATS.md, independently of the Rust code.
"""
from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import conftest
import oracle
import rows_oracle as ro
from conftest import _WORK, FIXTURES, Mount, fuse_skip_reason, walk_files

warnings.simplefilter("ignore")

FIXTURE_STORES = ["real_pbmc68k_reduced_legacy", "dense_f32", "csr_gzip", "csc_lzf_int64",
                  "oldver_anndata_0.6.22.post1"]


# --------------------------------------------------------------------------------------------------------------
# The synthetic store: every kind of selectable column, awkward labels, every matrix kind
# --------------------------------------------------------------------------------------------------------------

def make_synthetic(h5: Path, zarr: Path):
    import anndata as ad
    import scipy.sparse as sp
    rng = np.random.default_rng(12)
    n, m = 60, 7
    labels = ["T cell", "B/cell", ".hidden", "100%", "x=y", ""]
    cell_type = pd.Categorical(rng.choice(labels, n), categories=labels + ["unused"])
    cell_type[::9] = np.nan
    with_na_label = pd.Categorical(rng.choice(["NA", "ok"], n))
    with_na_label[::5] = np.nan
    maybe = pd.array(rng.choice([True, False], n), dtype="boolean")
    maybe[::4] = pd.NA
    obs = pd.DataFrame({
        "cell_type": cell_type,
        "grp=1": pd.Categorical(rng.choice([10, 20, 35], n)),
        "ratio": pd.Categorical(rng.choice([0.5, 1.25], n)),
        "flag": rng.choice([True, False], n),
        "maybe": maybe,
        "labelNA": with_na_label,
        "index": pd.Categorical(rng.choice(["u", "v"], n)),
        "score": rng.normal(size=n),
        "name": [f"n{i}" for i in range(n)],
    }, index=[f"cell{i}" for i in range(n)])
    x = sp.random(n, m, density=0.4, format="csr", dtype=np.float32, random_state=1)
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(m)]))
    a.layers["dense"] = rng.integers(0, 9, size=(n, m)).astype(np.int32)
    a.layers["csc"] = sp.random(n, m, density=0.3, format="csc", dtype=np.float64, random_state=2)
    a.obsm["X_pca"] = rng.normal(size=(n, 3))
    a.obsm["frame"] = pd.DataFrame({"v": rng.integers(0, 5, n)}, index=obs.index)
    a.obsp["conn"] = sp.random(n, n, density=0.1, format="csr", dtype=np.float32, random_state=3)
    a.obsp["dense"] = rng.normal(size=(n, n))
    a.raw = a.copy()
    a.uns["note"] = "synthetic"
    try:
        ad.settings.allow_write_nullable_strings = True
    except AttributeError:
        pass
    a.write_h5ad(h5, convert_strings_to_categoricals=False)
    a.write_zarr(zarr, convert_strings_to_categoricals=False)


_SYN: dict = {}


def synthetic() -> tuple[Path, Path]:
    if not _SYN:
        h5, zr = _WORK / "where_syn.h5ad", _WORK / "where_syn.zarr"
        make_synthetic(h5, zr)
        _SYN["p"] = (h5, zr)
    return _SYN["p"]


def store_path(sid: str) -> Path:
    return synthetic()[0] if sid == "synthetic" else conftest.store_path(sid)


_MOUNTS: dict[str, Mount] = {}


def mount(sid: str, path: Path | None = None) -> Mount:
    reason = fuse_skip_reason()
    if reason:
        pytest.skip(reason)
    m = _MOUNTS.get(sid)
    if m is None or m.proc is None or m.proc.poll() is not None:
        m = Mount(path or store_path(sid), _WORK / "wmnt" / sid.replace("/", "_"))
        m.start()
        _MOUNTS[sid] = m
    return m


@pytest.fixture(scope="module", autouse=True)
def _unmount():
    yield
    for m in _MOUNTS.values():
        m.stop()


# --------------------------------------------------------------------------------------------------------------
# Names and masks, from the contract
# --------------------------------------------------------------------------------------------------------------

def encode_value(label: str, limit: int = 254) -> str:
    s = label.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    return oracle.cut("%2E" + s[1:] if s.startswith(".") else s, label, limit)


def label_text(c) -> str:
    return str(c) if isinstance(c, str) else oracle.fmt_scalar(c)


def selections(obs: pd.DataFrame) -> dict[str, np.ndarray]:
    """{where/ name: boolean mask} of every non-empty value of every categorical / bool / nullable-boolean column."""
    out = {}
    for col in obs.columns:
        s = obs[col]
        head = oracle.cut(oracle.encode_col_uncut(col).replace("=", "%3D"), col) + "="
        if isinstance(s.dtype, pd.CategoricalDtype):
            labels = [label_text(c) for c in s.cat.categories]
            codes = s.cat.codes.to_numpy()
            vals = [(encode_value(lab, 254 - len(head.encode())), codes == k) for k, lab in enumerate(labels)]
            if "NA" not in labels:
                vals.append(("NA", codes < 0))
        elif isinstance(s.dtype, pd.BooleanDtype):
            na = s.isna().to_numpy()
            v = s.fillna(False).to_numpy(dtype=bool)
            vals = [("True", v & ~na), ("False", ~v & ~na), ("NA", na)]
        elif s.dtype == bool:
            v = s.to_numpy()
            vals = [("True", v), ("False", ~v)]
        else:
            continue
        out.update({head + name: mask for name, mask in vals if mask.any()})
    return out


_AD: dict = {}


def adata(sid: str):
    import anndata as ad
    if sid not in _AD:
        _AD[sid] = ad.read_h5ad(store_path(sid))
    return _AD[sid]


_MD: dict = {}


def mdirs(sid: str):
    if sid not in _MD:
        _MD[sid] = ro.matrix_dirs(store_path(sid))
    return _MD[sid]


def read_checked(p: Path) -> bytes:
    data = p.read_bytes()
    assert os.stat(p).st_size == len(data), f"{p}: st_size != bytes read"
    return data


def enoent(p: Path):
    with pytest.raises(OSError) as ei:
        os.stat(p)
    assert ei.value.errno == errno.ENOENT, f"{p}: {ei.value}"


def compare_tree(root: Path, want: dict[str, bytes], what: str):
    files, _ = walk_files(root)
    missing = sorted(set(want) - files)
    extra = sorted(f for f in files - set(want) if not oracle.is_allowed_extra(f))
    bad = [f"{what}/{rel}: {len(got)} vs {len(want[rel])} bytes" for rel in sorted(set(want) & files)
           if (got := read_checked(root / rel)) != want[rel]]
    assert not (missing or extra or bad), f"{what}: missing {missing[:10]}\nextra {extra[:10]}\n" + "\n".join(bad[:15])


def check_obs_and_x(root: Path, sid: str, idx: np.ndarray, what: str):
    a = adata(sid)
    assert read_checked(root / "obs" / "index.txt") == oracle.lines(a.obs_names[idx]), f"{what}: obs/index.txt"
    if a.X is not None:
        x = a.X[idx]
        dense = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        got = np.load(root / "X" / "dense.npy")
        assert got.dtype == dense.dtype and np.array_equal(got, dense, equal_nan=True), f"{what}: X/dense.npy"


def representative(sels: dict[str, np.ndarray], k: int) -> list[str]:
    """Up to k names: the first value of each column, NA / False values first."""
    firsts, seen = [], set()
    for name in sorted(sels, key=lambda n: (not n.endswith(("=NA", "=False")), n)):
        col = name.split("=", 1)[0]
        if col not in seen:
            seen.add(col)
            firsts.append(name)
    return firsts[:k]


ALL_STORES = FIXTURE_STORES + ["synthetic"]


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sid", ALL_STORES)
def test_listing_and_readme_counts(sid):
    m = mount(sid)
    sels = selections(adata(sid).obs)
    entries = {e.name: e.is_dir() for e in os.scandir(m.mnt / "where")}
    assert set(entries) == {"README.txt"} | set(sels), sorted(set(entries) ^ ({"README.txt"} | set(sels)))[:10]
    assert all(entries[n] for n in sels) and not entries["README.txt"]
    text = read_checked(m.mnt / "where" / "README.txt").decode()
    table = text.split("\ncells\tname\n", 1)[1] if sels else ""
    counts = {line.split("\t", 1)[1]: int(line.split("\t", 1)[0]) for line in table.splitlines() if line}
    assert counts == {n: int(mask.sum()) for n, mask in sels.items()}


@pytest.mark.parametrize("sid", ALL_STORES)
def test_every_value_obs_and_x(sid):
    m = mount(sid)
    for name, mask in selections(adata(sid).obs).items():
        check_obs_and_x(m.mnt / "where" / name, sid, np.flatnonzero(mask), f"{sid} where/{name}")


@pytest.mark.parametrize("sid", ALL_STORES)
def test_subset_files_equal_anndata(sid, tmp_path):
    m = mount(sid)
    sels = selections(adata(sid).obs)
    k = 8 if sid == "synthetic" else 2
    for name in representative(sels, k):
        want = ro.subset_expected(store_path(sid), np.flatnonzero(sels[name]), tmp_path, mdirs(sid))
        compare_tree(m.mnt / "where" / name, want, f"{sid} where/{name}")


def test_special_labels_and_columns():
    """Labels with `/`, `%`, a leading `.`, `=`, the empty label; a column with `=`, a column named `index`;
    numeric categories; a category spelled NA (then missing values are not addressable)."""
    m = mount("synthetic")
    names = set(os.listdir(m.mnt / "where"))
    for n in ["cell_type=B%2Fcell", "cell_type=%2Ehidden", "cell_type=100%25", "cell_type=x=y", "cell_type=",
              "cell_type=NA", "grp%3D1=10", "ratio=1.25", "inde%78=u", "labelNA=NA", "maybe=NA", "flag=True"]:
        assert n in names, n
    obs = adata("synthetic").obs
    idx = np.flatnonzero((obs["labelNA"] == "NA").to_numpy())
    check_obs_and_x(m.mnt / "where" / "labelNA=NA", "synthetic", idx, "labelNA=NA is the category")


def test_enoent_names():
    m = mount("synthetic")
    w = m.mnt / "where"
    for bad in ["cell_type=unused",      # a category with no cells
                "cell_type=nope", "cell_type=B/cell", "cell_type=.hidden", "cell_type=100%",
                "score=0", "name=n1",   # numeric and string columns are not selectable
                "nope=x", "cell_type", "=x", "flag=true", "flag=1", "flag=NA", "grp=1=10", "index=u",
                "ratio=1.250", "maybe=nan"]:
        try:
            os.stat(w / bad)
        except OSError as e:
            assert e.errno in (errno.ENOENT, errno.ENOTDIR), (bad, e)
        else:
            raise AssertionError(f"where/{bad} exists")
    assert "cell_type=unused" not in os.listdir(w)


@pytest.mark.parametrize("sid", ["synthetic", "real_pbmc68k_reduced_legacy"])
def test_compositions_equal_nested_masks(sid, tmp_path):
    m = mount(sid)
    sels = selections(adata(sid).obs)
    cols = list(dict.fromkeys(n.split("=", 1)[0] for n in sels))
    a_name = next(n for n in sels if n.startswith(cols[0] + "="))
    inner_all = selections(adata(sid).obs[sels[a_name]])
    b_name = next(n for n in inner_all if n.split("=", 1)[0] != cols[0])
    idx = np.flatnonzero(sels[a_name] & sels[b_name])
    root = m.mnt / "where" / a_name / "where" / b_name
    check_obs_and_x(root, sid, idx, f"where/{a_name}/where/{b_name}")
    compare_tree(root, ro.subset_expected(store_path(sid), idx, tmp_path, mdirs(sid)), f"{sid} composed")
    # Same selection in the other order.
    check_obs_and_x(m.mnt / "where" / b_name / "where" / a_name, sid, idx, "reversed composition")
    # A nested where/ lists only its README (a recursive walk stays finite), which gives the counts.
    nested = m.mnt / "where" / a_name / "where"
    assert os.listdir(nested) == ["README.txt"]
    text = read_checked(nested / "README.txt").decode()
    assert f"{len(idx)}\t{b_name}\n" in text
    # Selecting the same value again is the same subset; another value of the same column is empty.
    check_obs_and_x(m.mnt / "where" / a_name / "where" / a_name, sid, np.flatnonzero(sels[a_name]), "idempotent")
    other = next((n for n in sels if n.startswith(cols[0] + "=") and n != a_name), None)
    if other:
        enoent(m.mnt / "where" / a_name / "where" / other)


@pytest.mark.parametrize("sid", ["synthetic", "csr_gzip"])
def test_rows_and_where_nest(sid, tmp_path):
    """rows/S:E/where/x/ = adata[S:E][mask]; where/x/rows/S:E/ = rows S..E-1 of the subset."""
    m = mount(sid)
    a = adata(sid)
    n = a.n_obs
    s, e = n // 4, n // 4 + max(2, n // 2)
    sub_sels = selections(a.obs.iloc[s:e])
    name = representative(sub_sels, 1)[0]
    idx = s + np.flatnonzero(sub_sels[name])
    root = m.mnt / "rows" / f"{s}:{e}" / "where" / name
    check_obs_and_x(root, sid, idx, f"rows/{s}:{e}/where/{name}")
    assert name in os.listdir(m.mnt / "rows" / f"{s}:{e}" / "where")
    compare_tree(root, ro.subset_expected(store_path(sid), idx, tmp_path, mdirs(sid)), "where in rows")
    sels = selections(a.obs)
    name = representative(sels, 1)[0]
    sub = np.flatnonzero(sels[name])
    k = len(sub)
    root = m.mnt / "where" / name / "rows" / f"1:{k}"
    if k > 1:
        check_obs_and_x(root, sid, sub[1:k], f"where/{name}/rows/1:{k}")
        compare_tree(root, ro.subset_expected(store_path(sid), sub[1:k], tmp_path, mdirs(sid)), "rows in where")
    enoent(m.mnt / "where" / name / "rows" / f"0:{k + 1}")


@pytest.mark.parametrize("twin", ["synthetic", "dense_f32.v3.zarr", "csr_gzip.v2.zarr", "csc_lzf_int64.v3s.zarr"])
def test_zarr_twins(twin, tmp_path):
    """A Zarr store's where/ subsets have the same files as its h5ad twin's (the oracle's)."""
    if twin == "synthetic":
        sid, path = "synthetic", synthetic()[1]
    else:
        sid, path = twin.split(".")[0], FIXTURES / "zarr" / twin
    m = mount(f"zarr-{twin}", path)
    sels = selections(adata(sid).obs)
    assert set(os.listdir(m.mnt / "where")) == {"README.txt"} | set(sels)
    for name in representative(sels, 3):
        want = ro.subset_expected(store_path(sid), np.flatnonzero(sels[name]), tmp_path, mdirs(sid))
        compare_tree(m.mnt / "where" / name, want, f"{twin} where/{name}")


def test_cli_ls_and_cat():
    from conftest import run_annfs
    h5 = store_path("synthetic")
    r = run_annfs("ls", h5, "where")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    listed = set(r.stdout.decode().splitlines())
    assert "README.txt" in listed and "flag=True/" in listed
    r = run_annfs("cat", h5, "where/flag=True/obs/index.txt")
    assert r.returncode == 0
    obs = adata("synthetic").obs
    assert r.stdout == oracle.lines(obs.index[obs["flag"].to_numpy()])


def test_gene_columns_of_a_selection():
    """cols/ and genes/ inside where/ are the columns of the selected cells (not of the first cells)."""
    m = mount("synthetic")
    a = adata("synthetic")
    for name, mask in list(selections(a.obs).items())[:4]:
        sub = a.X[np.flatnonzero(mask)]
        dense = np.asarray(sub.todense()) if hasattr(sub, "todense") else np.asarray(sub)
        for j in range(a.n_vars):
            got = np.load(m.mnt / "where" / name / "X" / "cols" / f"{j}.npy")
            assert np.array_equal(got, dense[:, j]), f"where/{name}/X/cols/{j}.npy"
        got = np.load(m.mnt / "where" / name / "X" / "genes" / f"{a.var_names[2]}.npy")
        assert np.array_equal(got, dense[:, 2]), f"where/{name}/X/genes/{a.var_names[2]}.npy"
