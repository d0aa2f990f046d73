"""A random AnnData written by the real anndata at test time (shape, dtypes, encodings drawn from a seed), so the
daemon is also checked against a store nobody has seen before.  Seed: env ANNFS_TEST_SEED, else random (printed)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def make_random_store(path: Path, seed: int) -> Path:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 80))
    m = int(rng.integers(2, 50))

    def rand_matrix(r, c, allow_none=False):
        kinds = ["f32", "f64", "i32", "csr", "csc", "csr_i64"] + (["none"] if allow_none else [])
        k = kinds[rng.integers(len(kinds))]
        if k == "none":
            return None
        if k in ("f32", "f64"):
            x = rng.standard_normal((r, c)).astype(np.float32 if k == "f32" else np.float64)
            x[rng.random((r, c)) < 0.05] = np.nan
            return x
        if k == "i32":
            return rng.integers(-1000, 1000, (r, c)).astype(np.int32)
        fmt = "csc" if k == "csc" else "csr"
        x = sp.random(r, c, density=float(rng.uniform(0, 0.5)), format=fmt, random_state=rng,
                      dtype=np.float64)
        x.data = (x.data * 100).astype([np.float32, np.float64, np.int64][rng.integers(3)])
        if k == "csr_i64":
            x.indices = x.indices.astype(np.int64)
            x.indptr = x.indptr.astype(np.int64)
        return x

    def rand_frame(k, prefix):
        cols = {}
        for j in range(int(rng.integers(0, 8))):
            kind = rng.integers(8)
            name = f"{prefix}{j}"
            if kind == 0:
                dt = [np.int8, np.int16, np.int32, np.int64, np.uint16][rng.integers(5)]
                info = np.iinfo(dt)
                cols[name] = rng.integers(info.min, int(info.max) + 1, k, dtype=dt)
            elif kind == 1:
                v = rng.standard_normal(k) * 10.0 ** rng.integers(-8, 12)
                cols[name] = v.astype(np.float32 if rng.random() < 0.5 else np.float64)
            elif kind == 2:
                cols[name] = rng.random(k) < 0.5
            elif kind == 3:
                labels = [f"L{i}\t" if i % 7 == 0 else f"L{i}" for i in range(int(rng.integers(1, 200)))]
                codes = rng.integers(-1, len(labels), k)
                cols[name] = pd.Categorical.from_codes(codes, categories=labels)
            elif kind == 4:
                cols[name] = [["a", 'b"', "c\nd", "é", "x y"][i] for i in rng.integers(0, 5, k)]
            elif kind == 5:
                v = pd.array(rng.integers(-100, 100, k), dtype="Int64")
                v[rng.random(k) < 0.3] = pd.NA
                cols[name] = v
            elif kind == 6:
                v = pd.array(rng.random(k) < 0.5, dtype="boolean")
                v[rng.random(k) < 0.3] = pd.NA
                cols[name] = v
            else:
                cols[name] = rng.integers(0, 2**32, k).astype(np.uint32)
        return cols

    obs_names = [f"cell{i}_{rng.integers(1000)}" for i in range(n)]
    var_names = [f"gene{i}" for i in range(m)]
    obs = pd.DataFrame(rand_frame(n, "o"), index=obs_names)
    var = pd.DataFrame(rand_frame(m, "v"), index=var_names)
    if rng.random() < 0.5:
        obs.index.name = "barcode"
    adata = ad.AnnData(X=rand_matrix(n, m, allow_none=True), obs=obs, var=var)
    for i in range(int(rng.integers(0, 3))):
        adata.layers[f"layer{i}"] = rand_matrix(n, m)
    for i in range(int(rng.integers(0, 3))):
        adata.obsm[f"emb{i}"] = rng.standard_normal((n, int(rng.integers(1, 6)))).astype(np.float32)
    if rng.random() < 0.5:
        adata.obsp["graph"] = sp.random(n, n, density=0.1, format="csr", random_state=rng)
    adata.uns["seed"] = seed
    adata.uns["info"] = {"x": float(rng.standard_normal()), "v": rng.standard_normal(3),
                         "names": np.array(["p", "q\tr"])}
    comp = [None, "gzip", "lzf"][rng.integers(3)]
    adata.write_h5ad(path, compression=comp, convert_strings_to_categoricals=bool(rng.random() < 0.5))
    return path
