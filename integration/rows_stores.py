"""Extra stores for test_rows.py: edge cases of matrix.mtx / rows/ that the committed fixtures do not have."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def make_edge_store(path: Path) -> Path:
    """7 x 5: CSR X with explicit zeros, duplicate entries, unsorted indices, NaN/inf/-0.0/tiny/huge float32; layers
    complex64, bool CSR, uint64 (2**64-1), float16, int8 CSC, float64 dense with -0.0/NaN/inf; CSC obsp; dense varp;
    CSC obsm; var with gene_ids."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    warnings.simplefilter("ignore")
    n, m = 7, 5
    data = np.array([1.5, 0.0, np.nan, np.inf, -np.inf, -0.0, 1e-5, 1e20, 2.0, 3.0, 0.1, 7.0], dtype=np.float32)
    indices = np.array([4, 0, 2, 1, 1, 3, 0, 4, 2, 2, 3, 0], dtype=np.int32)
    indptr = np.array([0, 3, 3, 5, 8, 10, 11, 12], dtype=np.int32)  # row 1 empty; row 4 has a duplicate (2, 2)
    X = sp.csr_matrix((data, indices, indptr), shape=(n, m))
    rng = np.random.default_rng(4)
    obs = pd.DataFrame({"cat": pd.Categorical(list("abcabca")), "v": np.arange(n, dtype=np.int16)},
                       index=[f"bc{i}-1" for i in range(n)])
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:05d}" for i in range(m)]}, index=[f"G{i}" for i in range(m)])
    a = ad.AnnData(X=X, obs=obs, var=var)
    c = (rng.standard_normal((n, m)) + 1j * rng.standard_normal((n, m))).astype(np.complex64)
    c[0, :] = 0
    c[1, 1] = 0 + 2j
    a.layers["c64"] = c
    b = sp.random(n, m, density=0.4, format="csr", random_state=1).astype(bool)
    b.data[::3] = False  # stored False entries
    a.layers["bool_csr"] = b
    u = rng.integers(0, 3, (n, m)).astype(np.uint64)
    u[2, 3] = np.iinfo(np.uint64).max
    a.layers["u64"] = u
    a.layers["f16"] = (rng.standard_normal((n, m)) * 1000).astype(np.float16)
    a.layers["i8_csc"] = sp.csc_matrix(rng.integers(-128, 127, (n, m)).astype(np.int8) * (rng.random((n, m)) < 0.5))
    f = rng.standard_normal((n, m))
    f[0, 0], f[1, 1], f[2, 2], f[3, 3] = -0.0, np.nan, np.inf, 1e300
    f[4, :] = 0
    a.layers["f64"] = f
    a.obsp["g_csc"] = sp.random(n, n, density=0.5, format="csc", random_state=2)
    a.varp["vd"] = rng.standard_normal((m, m))
    a.obsm["sp_csc"] = sp.random(n, 3, density=0.5, format="csc", random_state=3, dtype=np.float32)
    a.write_h5ad(path)
    return path


def make_one_row_store(path: Path) -> Path:
    """1 x 3 dense int32 X (a one-row matrix: rows/0.npy is 1-D, rows/ lists one block)."""
    import anndata as ad
    import pandas as pd

    warnings.simplefilter("ignore")
    a = ad.AnnData(X=np.array([[0, -3, 2**31 - 1]], dtype=np.int32),
                   obs=pd.DataFrame(index=["only"]), var=pd.DataFrame(index=["a", "b", "c"]))
    a.write_h5ad(path)
    return path


def make_no_rows_store(path: Path) -> Path:
    """0 x 4 CSR X: matrix.mtx has no entries, rows/ lists nothing, every slice name is ENOENT."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    warnings.simplefilter("ignore")
    a = ad.AnnData(X=sp.csr_matrix((0, 4), dtype=np.float32), obs=pd.DataFrame(index=pd.Index([], dtype=str)),
                   var=pd.DataFrame(index=["a", "b", "c", "d"]))
    a.write_h5ad(path)
    return path


EXTRA_STORES = {"rows_edge": make_edge_store, "rows_one": make_one_row_store, "rows_none": make_no_rows_store}


def make_dense_store(path: Path, n: int = 20000, m: int = 500, seed: int = 0) -> Path:
    """n x m float64 dense X, uncompressed (fast to write), whose matrix.mtx size takes a pass over n*m values."""
    import anndata as ad
    import pandas as pd

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(seed)
    X = rng.random((n, m))
    X[X < 0.1] = 0
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(m)]))
    a.write_h5ad(path)
    return path
