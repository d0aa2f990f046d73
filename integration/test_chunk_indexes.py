"""Every HDF5 chunk index through a real mount: an h5ad whose obsm arrays and a layer were rewritten
(h5py, `libver="latest"`) as datasets resizable along the first, a later or both dimensions
(extensible arrays of rank 2, one in the library's swizzled order; a version-2 B-tree), of fixed
size (fixed array), allocated early (implicit index) and as one chunk, some with chunks never
written — each file served equal to what anndata reads through the HDF5 library."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import Mount, need_bin, need_fuse

N_OBS, N_VARS = 300, 40

# name: (shape, chunks, maxshape, gzip, rows written (the rest never written), early allocation)
ARRAYS = {
    "first_unlimited": ((N_OBS, 12), (16, 5), (None, 12), True, N_OBS - 40, False),
    "later_unlimited": ((N_OBS, 30), (7, 4), (N_OBS, None), False, N_OBS, False),
    "later_gzip": ((N_OBS, 30), (7, 4), (N_OBS, None), True, N_OBS - 30, False),
    "both_unlimited": ((N_OBS, 9), (5, 2), (None, None), True, N_OBS - 50, False),
    "fixed": ((N_OBS, 6), (10, 4), None, False, N_OBS, False),
    "implicit": ((N_OBS, 5), (32, 5), None, False, N_OBS, True),
    "single": ((N_OBS, 3), (N_OBS, 3), None, True, N_OBS, False),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import anndata as ad
    import h5py

    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("chunk_indexes") / "indexes.h5ad"
    adata = ad.AnnData(X=rng.random((N_OBS, N_VARS), dtype=np.float32))
    adata.obs_names = [f"c{i}" for i in range(N_OBS)]
    for name, (shape, *_rest) in ARRAYS.items():
        adata.obsm[name] = np.zeros(shape, dtype=np.float64)
    adata.layers["counts"] = np.zeros((N_OBS, N_VARS), dtype=np.int32)
    adata.write_h5ad(path)
    with h5py.File(path, "r+", libver="latest") as f:
        for name, (shape, chunks, maxshape, gzip, rows, early) in ARRAYS.items():
            _rewrite(f, f"obsm/{name}", rng.normal(size=shape), chunks, maxshape, gzip, rows, early)
        counts = rng.integers(0, 50, size=(N_OBS, N_VARS)).astype(np.int32)
        _rewrite(f, "layers/counts", counts, (9, 7), (None, None), False, N_OBS - 20, False)
    return path


def _rewrite(f, key, data, chunks, maxshape, gzip, rows, early):
    """Replaces dataset `key` by one holding `data` laid out as asked (same attributes)."""
    import h5py

    attrs = dict(f[key].attrs)
    del f[key]
    kw = {"compression": "gzip"} if gzip else {}
    if early:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(chunks)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        space = h5py.h5s.create_simple(data.shape)
        ds = h5py.Dataset(h5py.h5d.create(f.id, key.encode(), h5py.h5t.py_create(data.dtype), space, dcpl=dcpl))
    else:
        ds = f.create_dataset(key, shape=data.shape, dtype=data.dtype, chunks=chunks, maxshape=maxshape, **kw)
    if rows:
        ds[:rows] = data[:rows]
    for k, v in attrs.items():
        ds.attrs[k] = v


@need_bin
@need_fuse
def test_every_chunk_index_reads_as_anndata_does(store, tmp_path):
    import anndata as ad

    want = ad.read_h5ad(store)
    with Mount(store, tmp_path / "mnt") as m:
        for name in ARRAYS:
            got = np.load(m.mnt / "obsm" / f"{name}.npy")
            np.testing.assert_array_equal(got, want.obsm[name], err_msg=name)
            # Rows never written read as the fill value (zeros), as anndata reads them.
            assert got.shape == ARRAYS[name][0]
        np.testing.assert_array_equal(np.load(m.mnt / "layers" / "counts" / "dense.npy"), want.layers["counts"])
