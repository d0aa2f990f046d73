"""Writes data/sample.h5ad: the small store bundled for `annfs demo` (run from the repo root).

A PBMC-like toy dataset: 300 cells x 120 genes, sparse counts in X (gzip), a log-normalised
layer, cell-type categories, QC columns, PCA/UMAP embeddings, a neighbour graph and uns.
"""
import numpy as np
import pandas as pd
import scipy.sparse as sp
import anndata as ad

rng = np.random.default_rng(7)
n_obs, n_vars = 300, 120
counts = rng.negative_binomial(2, 0.7, size=(n_obs, n_vars)).astype(np.float32)
counts[rng.random(counts.shape) < 0.6] = 0
X = sp.csr_matrix(counts)
genes = [f"GENE{i:03d}" for i in range(n_vars)]
cells = [f"AAAC{i:05d}-1" for i in range(n_obs)]
types = np.array(["T cell", "B cell", "NK cell", "Monocyte"])
obs = pd.DataFrame(
    {
        "cell_type": pd.Categorical(types[rng.integers(0, 4, n_obs)]),
        "n_genes": (counts > 0).sum(1).astype(np.int32),
        "total_counts": counts.sum(1).astype(np.float32),
        "pct_mito": rng.random(n_obs).astype(np.float32) * 10,
        "is_doublet": rng.random(n_obs) < 0.05,
    },
    index=pd.Index(cells, name="barcode"),
)
var = pd.DataFrame(
    {"gene_ids": [f"ENSG{i:011d}" for i in range(n_vars)], "highly_variable": rng.random(n_vars) < 0.3},
    index=genes,
)
lognorm = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
a = ad.AnnData(X=X, obs=obs, var=var)
a.layers["lognorm"] = lognorm
a.obsm["X_pca"] = rng.normal(size=(n_obs, 10)).astype(np.float32)
a.obsm["X_umap"] = rng.normal(size=(n_obs, 2)).astype(np.float32)
knn = sp.random(n_obs, n_obs, density=0.03, format="csr", random_state=1, dtype=np.float32)
a.obsp["connectivities"] = knn
a.uns["neighbors"] = {"params": {"n_neighbors": 15, "method": "umap"}}
a.uns["cell_type_colors"] = np.array(["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"])
a.uns["pca_variance_ratio"] = np.sort(rng.random(10))[::-1]
a.write_h5ad("data/sample.h5ad", compression="gzip")
print("wrote data/sample.h5ad")
