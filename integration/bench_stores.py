"""Stores for integration/bench.py's --scale mode, written fast with numpy and anndata's own writer.

`scale_adata` builds the issue-9 AnnData in memory without scipy.sparse.random: every row has exactly
`genes * density` stored values, one drawn uniformly from each of that many equal bands of genes (so indices come
out sorted and distinct with no per-row sort); values are small positive integers as float32, like counts.
`write_scale_h5ad` writes it with anndata's defaults (uncompressed; anndata writes the sparse parts chunked) and
`write_gzip_h5ad` as scanpy/anndata do with `compression="gzip"` (h5py's default chunking). Stores are cached:
a path that already exists is reused.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

CELL_TYPES = 25


def scale_adata(cells: int, genes: int, density: float, seed: int = 0):
    """The AnnData of issue 9: CSR float32 X, obs with categoricals / ints / floats, obsm X_pca (50-d) and
    X_umap (2-d)."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    per_row = max(1, min(genes, int(round(genes * density))))
    band = genes // per_row
    # one index per band: band k covers [k*band, (k+1)*band); sorted and distinct by construction
    offsets = rng.integers(0, band, size=(cells, per_row), dtype=np.int32)
    indices = (offsets + (np.arange(per_row, dtype=np.int32) * band)[None, :]).ravel()
    del offsets
    data = rng.integers(1, 64, size=indices.size, dtype=np.int32).astype(np.float32)
    indptr = np.arange(cells + 1, dtype=np.int64) * per_row
    X = sp.csr_matrix((data, indices, indptr), shape=(cells, genes))
    n_counts = np.full(cells, 0, dtype=np.float32)
    np.add.reduceat(data, indptr[:-1], out=n_counts) if cells else None
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(rng.integers(0, CELL_TYPES, cells),
                                                   [f"type_{i:02d}" for i in range(CELL_TYPES)]),
            "batch": pd.Categorical.from_codes(rng.integers(0, 8, cells), [f"batch{i}" for i in range(8)]),
            "donor": pd.Categorical.from_codes(rng.integers(0, 120, cells), [f"D{i:03d}" for i in range(120)]),
            "sex": pd.Categorical.from_codes(rng.integers(0, 2, cells), ["female", "male"]),
            "n_genes": np.full(cells, per_row, dtype=np.int32),
            "total_counts": n_counts,
            "pct_mito": rng.random(cells).astype(np.float32) * 10,
            "score": rng.normal(size=cells),
        },
        index=pd.Index([f"cell{i}" for i in range(cells)]),
    )
    var = pd.DataFrame(
        {"n_cells": rng.integers(0, cells + 1, genes), "highly_variable": rng.random(genes) < 0.1},
        index=pd.Index([f"gene{i}" for i in range(genes)]),
    )
    a = ad.AnnData(X=X, obs=obs, var=var)
    a.obsm["X_pca"] = rng.normal(size=(cells, 50)).astype(np.float32)
    a.obsm["X_umap"] = rng.normal(size=(cells, 2)).astype(np.float32)
    return a


def _write(path: Path, what: str, write) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    t0 = time.perf_counter()
    print(f"writing {path} ({what}) ...", file=sys.stderr, flush=True)
    write(tmp)
    tmp.rename(path)
    print(f"  wrote {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return path


def write_scale_h5ad(path: Path, cells: int, genes: int, density: float) -> Path:
    """The uncompressed atlas-scale h5ad (anndata defaults), reused if it exists."""
    return _write(path, f"{cells} x {genes}, {density:.0%}, uncompressed",
                  lambda p: scale_adata(cells, genes, density).write_h5ad(p))


def write_gzip_h5ad(path: Path, cells: int, genes: int, density: float) -> Path:
    """The same layout written with `compression="gzip"` as scanpy users do, reused if it exists."""
    return _write(path, f"{cells} x {genes}, {density:.0%}, gzip",
                  lambda p: scale_adata(cells, genes, density, seed=1).write_h5ad(p, compression="gzip"))


def write_zarr_variants(work: Path, cells: int, genes: int, density: float) -> dict[str, Path]:
    """The same AnnData as zarr v2, v3 and sharded v3 (anndata's writer and defaults), reused if present."""
    import anndata as ad

    adata = None
    paths = {}
    for variant, (fmt, shard) in {"v2": (2, False), "v3": (3, False), "v3s": (3, True)}.items():
        path = work / f"scale-{cells}x{genes}.{variant}.zarr"

        def write(p, fmt=fmt, shard=shard):
            nonlocal adata
            adata = adata if adata is not None else scale_adata(cells, genes, density)
            with ad.settings.override(zarr_write_format=fmt, auto_shard_zarr_v3=shard):
                adata.write_zarr(p)

        paths[variant] = _write(path, f"zarr {variant}", write)
    return paths
