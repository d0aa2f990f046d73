#!/usr/bin/env python3
"""Build the committed test fixtures (small .h5ad stores) and the goldens derived from them.

    .venv/bin/python scripts/make_fixtures.py            # (re)write tests/fixtures/*.h5ad written by this venv's anndata
    .venv/bin/python scripts/make_fixtures.py --golden   # ... and tests/fixtures/golden/<stem>/<virtual path>
    .venv/bin/python scripts/make_fixtures.py --golden-only
    .venv/bin/python scripts/make_fixtures.py --old-versions   # see below; needs throwaway venvs in /tmp

Everything is deterministic (fixed seeds).  A fixture file is only replaced when the newly written bytes differ,
so running the script twice changes nothing.

Fixtures written by *other* anndata versions (`oldver_*`) and real files from PyPI/GitHub (`real_*`) are committed
and never rebuilt by CI; `--old-versions` documents and repeats how they were made (see tests/fixtures/SOURCES.md).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
GOLDEN = FIXTURES / "golden"
sys.path.insert(0, str(REPO / "integration"))

warnings.simplefilter("ignore")

# Goldens: files bigger than this are not written (listed in golden/<stem>.skip instead).
GOLDEN_MAX_FILE = 256 * 1024
GOLDEN_MAX_TOTAL = 5 * 1024 * 1024


# --------------------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------------------

def _rich_obs(n: int, rng: np.random.Generator):
    """An obs dataframe with (nearly) every column kind the contract names."""
    import pandas as pd

    def cyc(vals, dtype=None):
        vals = list(vals)
        out = [vals[i % len(vals)] for i in range(n)]
        return np.array(out, dtype=dtype) if dtype is not None else out

    cols = {}
    cols["int8"] = cyc([-128, 127, 0, -1, 5], np.int8)
    cols["int16"] = cyc([-32768, 32767, 3], np.int16)
    cols["int32"] = rng.integers(-(2**31), 2**31 - 1, size=n, dtype=np.int32)
    cols["int64"] = cyc([-(2**63), 2**63 - 1, 0, 42, -7], np.int64)
    cols["uint8"] = cyc([0, 255, 17], np.uint8)
    cols["uint16"] = cyc([0, 65535, 1000], np.uint16)
    cols["uint32"] = cyc([0, 2**32 - 1, 123456], np.uint32)
    cols["uint64"] = cyc([0, 2**64 - 1, 2**63], np.uint64)
    f32 = [np.nan, np.inf, -np.inf, -0.0, 1e-7, 1e20, 0.1, 3.0, 1.5e-45, 3.4028235e38, 1e-4, 1e16, 123.456,
           1e6, 999999.94, 1234567.0, 99999.99, 1.0001e-4]
    cols["float32"] = np.array(cyc(f32), dtype=np.float32)
    cols["float32"][len(f32):] = rng.standard_normal(n - len(f32)).astype(np.float32)
    f64 = [np.nan, np.inf, -np.inf, -0.0, 1e-7, 1e20, 0.1, 1 / 3, 1e16, 1e-4, 9.999999999999999e15,
           123456789.123, 5e-324, 1.7976931348623157e308, 2.0, -1e-5]
    cols["float64"] = np.array(cyc(f64), dtype=np.float64)
    cols["float64"][len(f64):] = rng.standard_normal(n - len(f64))
    cols["bool"] = rng.random(n) < 0.5
    strs = ["plain", "with\ttab", 'with "quote"', "line\nbreak", "carriage\rreturn", "unicode é日本🧬", "",
            " leading space", "comma, inside", "back\\slash", "'single'", "#hash", "0042", "x" * 70]
    cols["str"] = cyc(strs, object)
    cs = pd.Categorical(cyc(["T cell", "B cell", None, "NK\tcell", 'Mono "classical"']),
                        categories=["B cell", "Mono \"classical\"", "NK\tcell", "T cell", "unused"])
    cols["cat_str"] = cs
    cols["cat_int"] = pd.Categorical(cyc([10, 20, None, 30, 20]), categories=[10, 20, 30])
    cols["cat_ordered"] = pd.Categorical(cyc(["low", "mid", "high", None]),
                                         categories=["low", "mid", "high"], ordered=True)
    cols["cat_float"] = pd.Categorical(cyc([0.5, 1.0, 0.1]), categories=[0.1, 0.5, 1.0])
    # > 127 categories -> int16 codes
    cols["cat_big"] = pd.Categorical([f"c{i:03d}" for i in rng.integers(0, 200, n)],
                                     categories=[f"c{i:03d}" for i in range(200)])
    ni = pd.array(cyc([1, None, -3, 2**31 - 1, None, 0]), dtype="Int32")
    cols["nullable_int"] = ni
    cols["nullable_bool"] = pd.array(cyc([True, None, False]), dtype="boolean")
    cols["nullable_str"] = pd.array(cyc(["a", None, "tab\there", "", "ü"]), dtype="string")
    # Awkward names
    cols["a/b ratio"] = rng.random(n)
    cols["pct_%mito"] = rng.random(n).astype(np.float32)
    cols[".hidden"] = rng.integers(0, 10, n)
    cols["index"] = cyc(["i0", "i1", "i2"], object)
    cols["leiden.codes"] = rng.integers(0, 5, n).astype(np.int64)
    cols["x.mask"] = rng.random(n) < 0.3
    cols["y.categories"] = pd.Categorical(cyc(["u", "v"]))
    cols["100% sure"] = cyc(["yes", "no"], object)
    df = pd.DataFrame(cols, index=[f"cell_{i:03d}" for i in range(n)])
    return df


def _sparse(rng, shape, density, dtype=np.float32, fmt="csr"):
    import scipy.sparse as sp
    m = sp.random(shape[0], shape[1], density=density, format=fmt, dtype=np.float64, random_state=rng)
    m.data = (m.data * 10).astype(dtype)
    return m


def build_dense_f32():
    """Dense float32 X, uncompressed (contiguous); every obs column kind; layers/obsm/varm/obsp/varp/uns."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    n, m = 40, 30
    obs = _rich_obs(n, rng)
    var = pd.DataFrame(
        {
            "gene_ids": [f"ENSG{i:011d}" for i in range(m)],
            "highly_variable": rng.random(m) < 0.5,
            "means": rng.random(m),
            "feature_cat": pd.Categorical([["Gene Expression", "Antibody"][i % 2] for i in range(m)]),
            "n_cells": rng.integers(0, 40, m).astype(np.int32),
        },
        index=pd.Index([f"GENE{i}" for i in range(m)], name="gene_symbol"),
    )
    X = rng.standard_normal((n, m)).astype(np.float32)
    X[0, 0] = np.nan
    X[1, 1] = -0.0
    X[2, 2] = 1e20
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = rng.integers(0, 100, (n, m)).astype(np.int32)
    adata.layers["spliced"] = _sparse(rng, (n, m), 0.2, np.float32, "csr")
    adata.obsm["X_pca"] = rng.standard_normal((n, 5))
    adata.obsm["X_umap"] = rng.standard_normal((n, 2)).astype(np.float32)
    adata.obsm["df"] = pd.DataFrame(
        {"score": rng.random(n), "label": pd.Categorical([["x", "y"][i % 2] for i in range(n)]),
         "count": rng.integers(0, 9, n)},
        index=adata.obs_names,
    )
    adata.obsm["sparse_feat"] = _sparse(rng, (n, 8), 0.3, np.float64, "csr")
    adata.varm["PCs"] = rng.standard_normal((m, 5))
    adata.obsp["connectivities"] = _sparse(rng, (n, n), 0.1, np.float32, "csr")
    adata.obsp["distances"] = _sparse(rng, (n, n), 0.1, np.float64, "csr")
    adata.varp["corr"] = _sparse(rng, (m, m), 0.1, np.float64, "csr")
    rec = np.rec.fromarrays(
        [np.arange(4, dtype=np.int32), np.array([0.5, np.nan, 1e-7, -2.0]), np.array(["a", "b\tc", "é", ""])],
        names=["id", "value", "name"],
    )
    adata.uns = {
        "params": {"alpha": 0.5, "n_iter": 100, "flag": True, "method": "louvain",
                   "nested": {"deep": {"x": np.float32(0.1), "empty": {}}}},
        "int_scalar": 7,
        "neg_int": np.int16(-3),
        "float_scalar": 1e-7,
        "f32_scalar": np.float32(1e20),
        "bool_scalar": False,
        "str_scalar": 'with "quote"\tand tab',
        "arr_int": np.arange(5, dtype=np.int32),
        "arr_float": np.array([0.1, np.nan, np.inf, -np.inf, -0.0, 1e16, 1e-5]),
        "arr_f32": np.array([0.1, 1e-7, 3.0], dtype=np.float32),
        "arr_2d": np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        "arr_bool": np.array([True, False, True]),
        "str_array": np.array(["a", "b\tc", "日本", "", 'q"q']),
        "louvain_colors": ["#1f77b4", "#ff7f0e"],
        "rec": rec,
        "df": pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [0.1, 0.2, np.nan]},
                           index=["r1", "r2", "r3"]),
        "nothing": None,
        "sparse_uns": _sparse(rng, (6, 4), 0.4, np.float64, "csr"),
    }
    return adata, dict(convert_strings_to_categoricals=False)


def build_csr_gzip():
    """CSR X gzip; raw with its own var; named obs index; strings auto-converted to categoricals by anndata."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(2)
    n, m, mraw = 50, 25, 60
    raw_var = pd.DataFrame(
        {"gene_ids": [f"ID{i}" for i in range(mraw)], "mt": [i % 9 == 0 for i in range(mraw)],
         "dispersion": rng.random(mraw).astype(np.float32)},
        index=[f"g{i}" for i in range(mraw)],
    )
    raw = ad.AnnData(X=_sparse(rng, (n, mraw), 0.15, np.float32, "csr"), var=raw_var)
    raw.varm["loadings"] = rng.standard_normal((mraw, 3)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "sample": [["s1", "s2", "s3"][i % 3] for i in range(n)],  # -> categorical on write
            "n_counts": rng.integers(100, 10000, n).astype(np.float32),
            "cluster": pd.Categorical([f"c{i:03d}" for i in rng.integers(0, 150, n)],
                                      categories=[f"c{i:03d}" for i in range(150)]),
            "is_doublet": rng.random(n) < 0.1,
        },
        index=pd.Index([f"AAAC-{i}" for i in range(n)], name="cell_id"),
    )
    keep = np.arange(0, mraw, 60 // m)[:m]
    adata = ad.AnnData(X=raw.X[:, keep].tocsr(), obs=obs, var=raw_var.iloc[keep].copy())
    adata.raw = raw
    adata.layers["counts"] = _sparse(rng, (n, m), 0.2, np.float32, "csr")
    adata.obsm["X_pca"] = rng.standard_normal((n, 4)).astype(np.float32)
    adata.uns["log1p"] = {"base": None}
    adata.uns["hvg"] = {"flavor": "seurat"}
    return adata, dict(compression="gzip")


def build_csc_lzf():
    """CSC X float64 with int64 indices/indptr, lzf; int64 sparse layer; sparse obsm/varm; dense int X-like layer."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    n, m = 35, 45
    X = _sparse(rng, (n, m), 0.2, np.float64, "csc")
    X.indices = X.indices.astype(np.int64)
    X.indptr = X.indptr.astype(np.int64)
    lay = _sparse(rng, (n, m), 0.1, np.int64, "csr")
    lay.indices = lay.indices.astype(np.int64)
    lay.indptr = lay.indptr.astype(np.int64)
    obs = pd.DataFrame({"x": rng.random(n), "grp": pd.Categorical([["a", "b"][i % 2] for i in range(n)])},
                       index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame({"y": rng.integers(0, 3, m)}, index=[f"v{i}" for i in range(m)])
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["counts64"] = lay
    adata.layers["dense_f64"] = rng.standard_normal((n, m))
    adata.obsm["sp_csc"] = _sparse(rng, (n, 6), 0.3, np.float32, "csc")
    adata.varm["sp"] = _sparse(rng, (m, 3), 0.3, np.float64, "csr")
    adata.varp["knn"] = _sparse(rng, (m, m), 0.05, np.float32, "csc")
    return adata, dict(compression="lzf")


def build_empty_obs_no_x():
    """X=None, obs/var with no columns (default unnamed index), a few obsm entries only."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(4)
    n, m = 12, 7
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"o{i}" for i in range(n)]),
                       var=pd.DataFrame(index=[f"v{i}" for i in range(m)]))
    adata.obsm["emb"] = rng.standard_normal((n, 3)).astype(np.float32)
    adata.uns["empty_dict"] = {}
    adata.uns["one"] = 1
    return adata, {}


def build_uns_edge():
    """Rarer element kinds: int X, bool/uint16 layers, float16 obsm, complex/3-D/0-d/empty arrays in uns."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(5)
    n, m = 16, 9
    X = rng.integers(-5, 50, (n, m)).astype(np.int64)
    obs = pd.DataFrame({"v": np.linspace(0, 1, n, dtype=np.float32)}, index=[f"o{i}" for i in range(n)])
    var = pd.DataFrame(index=pd.Index([f"v{i}" for i in range(m)], name="var_names"))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["mask"] = rng.random((n, m)) < 0.5
    adata.layers["u16"] = rng.integers(0, 65535, (n, m)).astype(np.uint16)
    adata.obsm["half"] = rng.standard_normal((n, 3)).astype(np.float16)
    adata.obsm["ints"] = rng.integers(0, 9, (n, 2)).astype(np.int8)
    adata.uns = {
        "complex": np.array([1 + 2.5j, -0.5 - 1j, 0j]),
        "cube": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        "zero_d": np.array(3.25),
        "empty_f": np.zeros(0, dtype=np.float64),
        "str_2d": np.array([["a", "b"], ["c", "d\te"]]),
        "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
        "f16": np.array([0.1, 65504, -np.inf, 1000, 999, 1e-4, 6e-8], dtype=np.float16),
        "bool_2d": np.array([[True, False], [False, True]]),
        "big_int": 2**62,
        "unicode": "naïve – ✓",
    }
    return adata, {}


def build_scanpy_write():
    """Written by scanpy.write (gzip by default)."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(6)
    n, m = 30, 20
    X = rng.poisson(1.0, (n, m)).astype(np.float32)
    obs = pd.DataFrame({"n_genes": (X > 0).sum(1).astype(np.int64),
                        "louvain": pd.Categorical([str(i % 4) for i in range(n)])},
                       index=[f"bc{i}-1" for i in range(n)])
    var = pd.DataFrame({"gene_ids": [f"E{i}" for i in range(m)]}, index=[f"G{i}" for i in range(m)])
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["X_tsne"] = rng.standard_normal((n, 2))
    adata.uns["louvain"] = {"params": {"resolution": 1.0}}
    return adata, {}


def build_libver_latest():
    """An HDF5 file created with h5py libver='latest' into which anndata writes the AnnData (write_elem)."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(7)
    n, m = 24, 18
    X = rng.standard_normal((n, m))
    obs = pd.DataFrame({"k": rng.integers(0, 5, n), "s": pd.Categorical([["p", "q"][i % 2] for i in range(n)])},
                       index=[f"r{i}" for i in range(n)])
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"f{i}" for i in range(m)]))
    adata.layers["sp"] = _sparse(rng, (n, m), 0.2, np.float32, "csr")
    adata.obsm["X_pca"] = rng.standard_normal((n, 3)).astype(np.float32)
    adata.uns["note"] = "libver latest"
    return adata, {}


FIXTURE_BUILDERS = {
    "dense_f32": build_dense_f32,
    "csr_gzip": build_csr_gzip,
    "csc_lzf_int64": build_csc_lzf,
    "empty_obs_no_x": build_empty_obs_no_x,
    "uns_edge": build_uns_edge,
    "scanpy_write": build_scanpy_write,
    "libver_latest": build_libver_latest,
}


def write_fixture(stem: str, path: Path) -> None:
    import anndata as ad
    import h5py

    adata, kw = FIXTURE_BUILDERS[stem]()
    with ad.settings.override(allow_write_nullable_strings=True):
        if stem == "scanpy_write":
            import scanpy as sc
            sc.write(path, adata)
        elif stem == "libver_latest":
            with h5py.File(path, "w", libver="latest") as f:
                ad.io.write_elem(f, "/", adata)
        else:
            adata.write_h5ad(path, **kw)


def _same_content(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.read_bytes() == b.read_bytes()


def make_fixtures(stems=None) -> list[Path]:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    out = []
    for stem in stems or FIXTURE_BUILDERS:
        dst = FIXTURES / f"{stem}.h5ad"
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td) / dst.name
            write_fixture(stem, tmp)
            if _same_content(tmp, dst):
                status = "unchanged"
            else:
                shutil.copyfile(tmp, dst)
                status = "written"
        print(f"{status:9s} {dst.relative_to(REPO)} ({dst.stat().st_size} bytes)")
        out.append(dst)
    return out


# --------------------------------------------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------------------------------------------

def committed_fixtures() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*.h5ad"))


def make_goldens() -> None:
    import oracle

    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    GOLDEN.mkdir(parents=True)
    total = 0
    for store in committed_fixtures():
        tree = oracle.expected_tree(store)
        skipped = []
        base = GOLDEN / store.stem
        for rel in sorted(tree):
            data = tree[rel]
            if len(data) > GOLDEN_MAX_FILE or total + len(data) > GOLDEN_MAX_TOTAL:
                skipped.append(f"{rel}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}")
                continue
            p = base / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            total += len(data)
        # Directories (possibly empty) are recorded so the Rust tests can compare the tree shape.
        dirs = sorted(oracle.expected_dirs(store))
        (GOLDEN / f"{store.stem}.dirs").write_text("".join(d + "\n" for d in dirs))
        if skipped:
            (GOLDEN / f"{store.stem}.skip").write_text(
                "# path<TAB>size<TAB>sha256 of files not written (too large)\n" + "".join(s + "\n" for s in skipped))
        print(f"golden    {store.stem}: {len(tree) - len(skipped)} files, {len(skipped)} skipped")
    print(f"golden total {total} bytes")


# --------------------------------------------------------------------------------------------------------------
# Files from other anndata versions (run by hand; outputs are committed)
# --------------------------------------------------------------------------------------------------------------

OLD_VERSIONS = {
    # version: pinned companions with cp311 wheels
    "0.6.22.post1": ["numpy==1.23.5", "pandas==1.5.3", "h5py==3.8.0", "scipy==1.10.1"],
    "0.7.8": ["numpy==1.23.5", "pandas==1.5.3", "h5py==3.8.0", "scipy==1.10.1"],
    "0.8.0": ["numpy==1.23.5", "pandas==1.5.3", "h5py==3.8.0", "scipy==1.10.1"],
    "0.9.2": ["numpy==1.24.4", "pandas==2.0.3", "h5py==3.9.0", "scipy==1.11.4"],
    "0.10.9": ["numpy==1.26.4", "pandas==2.1.4", "h5py==3.10.0", "scipy==1.11.4"],
}


def make_old_versions(venv_root: Path) -> None:
    """For each version: create /tmp venv (python3.11), pip install anndata==V + companions, run
    scripts/old_version_writer.py there.  Output: tests/fixtures/oldver_anndata_<V>.h5ad."""
    writer = REPO / "scripts" / "old_version_writer.py"
    for ver, extra in OLD_VERSIONS.items():
        venv = venv_root / f"venv-{ver}"
        py = venv / "bin" / "python"
        if not py.exists():
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--only-binary",
                            "numpy,pandas,h5py,scipy", f"anndata=={ver}", *extra], check=True)
        dst = FIXTURES / f"oldver_anndata_{ver}.h5ad"
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td) / dst.name
            r = subprocess.run([str(py), str(writer), str(tmp)], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAILED    anndata {ver}:\n{r.stderr[-2000:]}")
                continue
            twin = next((o for o in sorted(FIXTURES.glob("oldver_*.h5ad")) if o != dst and _same_content(tmp, o)),
                        None)
            if twin is not None:  # e.g. 0.9.2 and 0.10.9 write exactly the bytes 0.8.0 writes
                print(f"old       anndata {ver}: byte-identical to {twin.name}, not kept")
                continue
            if not _same_content(tmp, dst):
                shutil.copyfile(tmp, dst)
        print(f"old       {dst.relative_to(REPO)} ({dst.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", action="store_true", help="also write tests/fixtures/golden/")
    ap.add_argument("--golden-only", action="store_true", help="only rewrite the goldens")
    ap.add_argument("--old-versions", action="store_true",
                    help="write oldver_* fixtures with throwaway venvs under --venv-root")
    ap.add_argument("--venv-root", type=Path, default=Path("/tmp/oldad"))
    ap.add_argument("stems", nargs="*", help=f"subset of {sorted(FIXTURE_BUILDERS)}")
    a = ap.parse_args()
    if a.old_versions:
        make_old_versions(a.venv_root)
        return
    if not a.golden_only:
        make_fixtures(a.stems or None)
    if a.golden or a.golden_only:
        make_goldens()


if __name__ == "__main__":
    main()
