#!/usr/bin/env python3
"""Write tests/fixtures/damaged/heap_zeroed.h5ad: the issue-9 hang, reproduced on purpose.

An h5ad written by anndata whose gene name `g1xxx…` (5,000 bytes) gets a global heap collection
of its own; the objects of that collection are then zeroed with its `GCOL` header intact — the
damage that sent the HDF5 library's heap parser into an endless loop under its global lock while
a reader of `var.tsv` waited forever. annfs must open the store, serve everything else, and fail
`var.tsv` (and `var/index.txt`) with a clean error.

Usage: .venv/bin/python scripts/make_damaged_fixtures.py
"""

import struct
import sys
from pathlib import Path

import anndata as ad
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


if __name__ == "__main__":
    main()
