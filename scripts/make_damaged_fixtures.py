#!/usr/bin/env python3
"""Write the hand-made stores of tests/fixtures/damaged/ (the others come from fuzz_stores.py).

heap_zeroed.h5ad: the issue-9 hang, reproduced on purpose.

An h5ad written by anndata whose gene name `g1xxx…` (5,000 bytes) gets a global heap collection
of its own; the objects of that collection are then zeroed with its `GCOL` header intact — the
damage that sent the HDF5 library's heap parser into an endless loop under its global lock while
a reader of `var.tsv` waited forever. annfs must open the store, serve everything else, and fail
`var.tsv` (and `var/index.txt`) with a clean error.

categories_reach.h5ad, strings_chunks_huge.h5ad: valid HDF5, absurd lengths — a dataset rewritten
chunked and resized to 2^40 (categories of `obs/c`, 4,096 strings per chunk) or 2^35 (`uns/s`, four
strings per chunk), its chunks past the first never written. Rendering `obs/c.txt` rendered every
label first (2^40 missing strings: hours); reading `uns/s.txt` sized 2^35 lines chunk by chunk.

links_cycle.h5ad, links_doubling.h5ad: valid HDF5, groups linked into themselves — `uns/a` a hard
link to the root and `uns/d/up` one to `uns` (found by the semantic fuzzer: fuzz_stores.py --seed 77
--only 25, a root link in uns/neighbors/params); a chain of 24 groups under `uns/g` each linking
the next twice (2^24 paths). The tree walk at open copied every cycle down to 64 levels (with two
cycles, a tree doubling per level: the open never ended) and walked all 2^24 paths. Now a link
back to a group it is inside is not followed (the store reads without it), and a file of more
than 131,072 groups and datasets is refused at open.

categories_long.v2.zarr: valid Zarr, a long categories array — obs/c's categories (30 labels, 30
of 40 cells' values) grown to 2^22 in their .zarray and the consolidated .zmetadata, the chunks
past the first never written (found by the semantic fuzzer: fuzz_stores.py --seed 81 --only 191,
on dense_f32.v2.zarr). Every where/c=V/ subset made its own obs/c.categories.txt and sized its
4M lines again: reading the store's files took 30 s of which the subsets' copies were nearly all.
Subsets now serve the root's file.

chunks_tiny.h5ad: valid HDF5, a million one-element chunks — `uns/arr` (4 floats) rewritten in
chunks of one element and resized to 2^20, the chunks past the fourth never written (found by
the semantic fuzzer: fuzz_stores.py --seed 1352 --only 228, and --only 139 the same on a Zarr
store). A sequential reader of `uns/arr.npy` dropped each 8-byte chunk behind it into the
recycler of chunk buffers, which kept every one and summed them all on each new one: the read
never ended. Buffers under 64 KiB are no longer kept.

Usage: .venv/bin/python scripts/make_damaged_fixtures.py
"""

import struct
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
LONG = "g1" + "x" * 4998


def collections(data):
    """(offset, size) of every `GCOL` collection in `data` (8-byte lengths)."""
    out, i = [], data.find(b"GCOL")
    while i >= 0:
        out.append((i, struct.unpack_from("<Q", data, i + 8)[0]))
        i = data.find(b"GCOL", i + 1)
    return out


def main():
    dst = ROOT / "tests" / "fixtures" / "damaged" / "heap_zeroed.h5ad"
    dst.parent.mkdir(parents=True, exist_ok=True)
    a = ad.AnnData(
        X=np.arange(12, dtype=np.float32).reshape(4, 3),
        obs=pd.DataFrame({"n": np.arange(4)}, index=[f"c{i}" for i in range(4)]),
        var=pd.DataFrame(index=["g0", LONG, "g2"]),
    )
    a.write_h5ad(dst)
    data = bytearray(dst.read_bytes())
    hits = [(off, size) for off, size in collections(data) if LONG.encode() in data[off:off + size]]
    if len(hits) != 1:
        sys.exit(f"expected one collection holding the long name, found {hits}")
    off, size = hits[0]
    data[off + 16:off + size] = bytes(size - 16)
    dst.write_bytes(bytes(data))
    print(f"{dst.relative_to(ROOT)}: zeroed the objects of the collection at {off} ({size} bytes)")


def resized(dst, path, chunk, length):
    """Rewrites dataset `path` of `dst` chunked by `chunk` elements, then resizes it to `length`."""
    with h5py.File(dst, "r+") as f:
        d = f[path]
        data, attrs, dtype = d[:], dict(d.attrs), d.dtype
        del f[path]
        new = f.create_dataset(path, shape=(len(data),), maxshape=(None,), chunks=(chunk,), dtype=dtype, data=data)
        for k, v in attrs.items():
            new.attrs[k] = v
        new.resize((length,))


def small(dst, **uns):
    """A 5 x 3 AnnData with a categorical obs column `c` and `uns`, written to `dst`."""
    a = ad.AnnData(
        X=np.ones((5, 3), dtype=np.float32),
        obs=pd.DataFrame({"c": pd.Categorical(list("abaab"))}, index=[f"c{i}" for i in range(5)]),
        var=pd.DataFrame(index=list("xyz")),
    )
    a.uns.update(uns)
    a.write_h5ad(dst)


def absurd_lengths():
    for name, path, chunk, length in [("categories_reach.h5ad", "obs/c/categories", 1 << 12, 1 << 40),
                                      ("strings_chunks_huge.h5ad", "uns/s", 4, 1 << 35)]:
        dst = ROOT / "tests" / "fixtures" / "damaged" / name
        small(dst, s=np.array(["u", "v", "w"], dtype=object))
        resized(dst, path, chunk, length)
        print(f"{dst.relative_to(ROOT)}: {path} resized to {length} over chunks of {chunk}")


def link_cycles():
    dst = ROOT / "tests" / "fixtures" / "damaged" / "links_cycle.h5ad"
    small(dst, d={"v": 1})
    with h5py.File(dst, "r+") as f:
        f["uns/a"] = f["/"]
        f["uns/d/up"] = f["uns"]
    print(f"{dst.relative_to(ROOT)}: uns/a links to /, uns/d/up to uns")
    dst = ROOT / "tests" / "fixtures" / "damaged" / "links_doubling.h5ad"
    small(dst, d={"v": 1})
    with h5py.File(dst, "r+") as f:
        groups = [f.create_group(f"uns/g/{i}") for i in range(25)]
        groups[-1]["v"] = np.arange(3)
        for g, nxt in zip(groups, groups[1:]):
            g["l"] = nxt
            g["r"] = nxt
    print(f"{dst.relative_to(ROOT)}: 24 groups under uns/g, each linking the next twice")


def long_categories():
    import json
    import shutil

    dst = ROOT / "tests" / "fixtures" / "damaged" / "categories_long.v2.zarr"
    shutil.rmtree(dst, ignore_errors=True)
    labels = [f"t{i:02d}" for i in range(30)]
    a = ad.AnnData(
        X=np.ones((40, 2), dtype=np.float32),
        obs=pd.DataFrame({"c": pd.Categorical([labels[i % 30] for i in range(40)], categories=labels)},
                         index=[f"c{i}" for i in range(40)]),
        var=pd.DataFrame(index=["x", "y"]),
    )
    with ad.settings.override(zarr_write_format=2):
        a.write_zarr(dst)
    zarray = dst / "obs" / "c" / "categories" / ".zarray"
    meta = json.loads(zarray.read_text())
    meta["shape"] = [1 << 22]
    zarray.write_text(json.dumps(meta, indent=2))
    cons = dst / ".zmetadata"
    doc = json.loads(cons.read_text())
    doc["metadata"]["obs/c/categories/.zarray"] = meta
    cons.write_text(json.dumps(doc, indent=2))
    print(f"{dst.relative_to(ROOT)}: obs/c/categories grown to 2^22 (chunks of {meta['chunks'][0]})")


def tiny_chunks():
    dst = ROOT / "tests" / "fixtures" / "damaged" / "chunks_tiny.h5ad"
    small(dst, arr=np.arange(1, 5, dtype=np.float64))
    resized(dst, "uns/arr", 1, 1 << 20)
    print(f"{dst.relative_to(ROOT)}: uns/arr resized to 2^20 over chunks of one element")


if __name__ == "__main__":
    main()
    absurd_lengths()
    link_cycles()
    long_categories()
    tiny_chunks()
