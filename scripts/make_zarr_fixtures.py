#!/usr/bin/env python3
"""Write every small committed `tests/fixtures/*.h5ad` again as Zarr, with the real anndata:

    tests/fixtures/zarr/<stem>.v2.zarr    zarr format 2 (Blosc-lz4, consolidated `.zmetadata`)
    tests/fixtures/zarr/<stem>.v3.zarr    zarr format 3 (zstd, inline consolidated metadata)
    tests/fixtures/zarr/<stem>.v3s.zarr   zarr format 3, `anndata.settings.auto_shard_zarr_v3 = True`

plus a few hand-made stores for layouts the current anndata no longer writes (see `extra_stores`).
`<stem>.archive.zarr` are real stores written by old anndata releases (tests/fixtures/SOURCES.md); this
script leaves them alone.

Each Zarr store must render byte-identical to its h5ad twin (tests/golden_zarr.rs, integration/test_zarr.py).
`X` (and every dense layer) gets small chunks so that reads cross chunk and shard boundaries.

    .venv/bin/python scripts/make_zarr_fixtures.py        # (re)write tests/fixtures/zarr/
"""
from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
OUT = FIXTURES / "zarr"

warnings.simplefilter("ignore")

# Too big to triple (1.7 MB); the legacy layout is covered by the HDF5 tests.
SKIP = {"real_pbmc68k_reduced_legacy"}
# Every fixture is written as v2; these also as v3 and sharded v3 (keeps tests/fixtures/zarr a few MB).
V3_STEMS = {"dense_f32", "csr_gzip", "csc_lzf_int64", "empty_obs_no_x", "uns_edge", "scanpy_write",
            "oldver_anndata_0.8.0"}

VARIANTS = {"v2": (2, False), "v3": (3, False), "v3s": (3, True)}


def chunks_for(adata):
    """Small X chunks (about 4 chunks per axis) so reads cross chunk boundaries."""
    n, m = adata.shape
    return (max(1, -(-n // 4)), max(1, -(-m // 3)))


def write(adata, path: Path, variant: str) -> None:
    import anndata as ad

    fmt, shard = VARIANTS[variant]
    ad.settings.zarr_write_format = fmt
    ad.settings.auto_shard_zarr_v3 = shard
    ad.settings.allow_write_nullable_strings = True
    if path.exists():
        shutil.rmtree(path)
    chunks = chunks_for(adata) if adata.X is not None and adata.n_obs and adata.n_vars else None
    # zarr-python refuses `/` in names; h5ad nests such a column as groups (`obs/a/b ratio`), and so do we:
    # write it under a placeholder name, then move it into place and re-consolidate.
    slashed = {axis: [c for c in getattr(adata, axis).columns if "/" in str(c)] for axis in ("obs", "var")}
    if any(slashed.values()):
        adata = adata.copy()
        for axis, cols in slashed.items():
            getattr(adata, axis).rename(columns={c: c.replace("/", SLASH) for c in cols}, inplace=True)
    adata.write_zarr(path, chunks=chunks, convert_strings_to_categoricals=False)
    if any(slashed.values()):
        nest_slashed_columns(path, slashed, fmt)


SLASH = "__SLASH__"


def nest_slashed_columns(path: Path, slashed: dict, fmt: int) -> None:
    import zarr

    for axis, cols in slashed.items():
        for col in cols:
            parts = col.split("/")
            parent = path / axis
            for p in parts[:-1]:
                parent = parent / p
                parent.mkdir(exist_ok=True)
                if fmt == 2:
                    (parent / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
                else:
                    (parent / "zarr.json").write_text(json.dumps(
                        {"zarr_format": 3, "node_type": "group", "attributes": {}}))
            (path / axis / col.replace("/", SLASH)).rename(parent / parts[-1])
        g = zarr.open_group(path / axis, mode="r+", zarr_format=fmt)
        order = [c.replace(SLASH, "/") for c in g.attrs["column-order"]]
        g.attrs["column-order"] = order
    zarr.consolidate_metadata(str(path), zarr_format=fmt)


def extra_stores() -> None:
    """Layouts older anndata wrote to Zarr that 0.12 no longer writes: `<U` scalars (anndata <= 0.11),
    `|S` fixed bytes, a v2 store without `.zmetadata` and with `/` as the chunk separator."""
    import anndata as ad
    import zarr

    src = FIXTURES / "uns_edge.h5ad"
    adata = ad.read_h5ad(src)
    # v2, no consolidated metadata, `/` separator: re-write every array of the v2 store.
    v2 = OUT / "uns_edge.v2.zarr"
    dst = OUT / "uns_edge.v2nested.zarr"
    if dst.exists():
        shutil.rmtree(dst)
    srcg = zarr.open_group(v2, mode="r", zarr_format=2)
    dstg = zarr.open_group(dst, mode="w", zarr_format=2)

    def copy(sg, dg):
        dg.attrs.update(dict(sg.attrs))
        for name, member in sorted(sg.members()):
            if isinstance(member, zarr.Group):
                copy(member, dg.create_group(name))
            else:
                data = member[...]
                kw = dict(shape=member.shape, dtype=member.dtype, chunks=member.chunks,
                          chunk_key_encoding={"name": "v2", "separator": "/"},
                          compressors=member.compressors, filters=member.filters,
                          fill_value=member.fill_value)
                a = dg.create_array(name, **kw)
                if member.shape == () and member.nchunks_initialized == 0:
                    pass  # anndata's `null`: 0-d with no chunk
                else:
                    a[...] = data
                a.attrs.update(dict(member.attrs))

    copy(srcg, dstg)
    # Old-style string scalars and bytes: `<U` 0-d arrays (anndata <= 0.11) and `|S` arrays.
    uns = dstg["uns"]
    del uns["unicode"]
    a = uns.create_array("unicode", shape=(), dtype="<U40", fill_value="")
    a[...] = adata.uns["unicode"]
    a.attrs.update({"encoding-type": "string", "encoding-version": "0.2.0"})
    s2d = np.char.encode(np.asarray(adata.uns["str_2d"], dtype=str), "utf-8")
    attrs = dict(uns["str_2d"].attrs)
    del uns["str_2d"]
    a = uns.create_array("str_2d", shape=s2d.shape, dtype=s2d.dtype, chunks=(1, s2d.shape[1]),
                         chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=b"")
    a[...] = s2d
    a.attrs.update(attrs)
    (dst / ".zmetadata").unlink(missing_ok=True)


def restore_scalar_dtypes(adata, h5: Path):
    """anndata reads 0-d numeric `uns` values as Python scalars (float32 becomes float): give them back their
    stored dtype so the zarr twin stores the same type as the h5ad."""
    import h5py

    with h5py.File(h5, "r") as f:
        if "uns" not in f or not isinstance(f["uns"], h5py.Group):
            return adata

        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset) or obj.shape != () or obj.dtype.kind not in "biufc":
                return
            d = adata.uns
            *parents, leaf = name.split("/")
            for p in parents:
                d = d.get(p) if isinstance(d, dict) else None
            if isinstance(d, dict) and leaf in d and np.isscalar(d[leaf]):
                d[leaf] = obj.dtype.type(d[leaf])

        f["uns"].visititems(visit)
    return adata


def main() -> int:
    import anndata as ad

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.zarr"):
        if not old.name.endswith(".archive.zarr"):  # committed real stores, not generated here
            shutil.rmtree(old)
    for h5 in sorted(FIXTURES.glob("*.h5ad")):
        if h5.stem in SKIP:
            continue
        adata = restore_scalar_dtypes(ad.read_h5ad(h5), h5)
        for variant in VARIANTS if h5.stem in V3_STEMS else ["v2"]:
            path = OUT / f"{h5.stem}.{variant}.zarr"
            try:
                write(adata, path, variant)
            except Exception as e:  # pragma: no cover - reported, not fatal
                print(f"{path.name}: {type(e).__name__}: {e}", file=sys.stderr)
                shutil.rmtree(path, ignore_errors=True)
    extra_stores()
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    files = sum(1 for f in OUT.rglob("*") if f.is_file())
    print(f"{OUT}: {files} files, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
