"""Write one small AnnData with whatever anndata version runs this script (0.6 .. current).

Used by `scripts/make_fixtures.py --old-versions`, which runs it inside throwaway venvs with old anndata releases.
Must stay compatible with old numpy/pandas/anndata APIs: no f-strings beyond 3.6, no new pandas dtypes.
"""
import sys
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
import anndata as ad

warnings.simplefilter("ignore")

out = sys.argv[1]
rng = np.random.RandomState(11)
n, m = 20, 12
X = sp.random(n, m, density=0.3, format="csr", dtype=np.float64, random_state=rng)
X.data = np.round(X.data * 10, 3)
X = X.astype(np.float32)
obs = pd.DataFrame(
    {
        "n_genes": rng.randint(0, 1000, n).astype(np.int64),
        "frac": rng.rand(n),
        "frac32": rng.rand(n).astype(np.float32),
        "group": [["alpha", "beta", "gamma"][i % 3] for i in range(n)],
        "flag": np.array([i % 2 == 0 for i in range(n)]),
    },
    index=["cell%d" % i for i in range(n)],
)
var = pd.DataFrame(
    {"gene_ids": ["ENSG%05d" % i for i in range(m)], "means": rng.rand(m)},
    index=["gene%d" % i for i in range(m)],
)
adata = ad.AnnData(X=X, obs=obs, var=var)
adata.raw = adata
adata.layers["dense"] = rng.randint(0, 9, (n, m)).astype(np.float32)
adata.obsm["X_pca"] = rng.randn(n, 3).astype(np.float32)
adata.varm["PCs"] = rng.randn(m, 3)
adata.uns["params"] = {"alpha": 0.25, "k": 15, "method": "umap", "arr": np.arange(4)}
adata.uns["group_colors"] = np.array(["#aa0000", "#00aa00", "#0000aa"])
adata.write(out)
print(ad.__version__)
