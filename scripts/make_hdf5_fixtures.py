#!/usr/bin/env python3
"""Writes the small HDF5 fixtures used by the Rust tests of the HDF5 backend.

Every file `tests/fixtures/hdf5/<name>.h5` gets a sidecar `<name>.json` holding what h5py
(an independent reader) decodes from it:

* ``arrays``: for each numeric dataset ``{"dtype": "<i4", "shape": [...], "hex": "<LE bytes>"}``;
  compound datasets carry the bytes in annfs' packed record layout (fields in order, no padding,
  little-endian, vlen string fields take no bytes) plus ``"vlen_fields": {name: [strings]}``.
* ``strings``: for each string dataset the flat C-order list of values.
* ``attrs``: for each element path the expected JSON attributes.
* ``unsupported``: dataset paths whose reads must fail as unsupported.
* ``order``: for groups, the expected child order.

Run: ``/work/main/.venv/bin/python scripts/make_hdf5_fixtures.py`` (needs h5py and numpy).
"""

import json
import os
import shutil
import sys

import h5py
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hdf5")


def le(arr):
    """Little-endian copy of a numeric array (bool stays bool)."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "c":
        return arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.kind in "iuf":
        return arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def descr(dt):
    dt = np.dtype(dt)
    if dt.kind == "b":
        return "|b1"
    return dt.newbyteorder("<").str if dt.itemsize > 1 else dt.str.replace(">", "|").replace("<", "|")


class Expect:
    """Collects expected values for one fixture file."""

    def __init__(self):
        self.arrays, self.strings, self.attrs, self.unsupported, self.order = {}, {}, {}, [], {}

    def array(self, path, ds):
        data = le(ds[()])
        self.arrays[path] = {
            "dtype": descr(data.dtype),
            "shape": list(data.shape),
            "hex": np.ascontiguousarray(data).tobytes().hex(),
        }

    def strs(self, path, ds):
        data = ds[()]
        flat = np.asarray(data, dtype=object).reshape(-1)
        out = []
        for v in flat:
            if isinstance(v, bytes):
                v = v.rstrip(b"\0").decode("utf-8", "replace")
            out.append(v)
        self.strings[path] = out

    def dump(self, name):
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(
                {
                    "arrays": self.arrays,
                    "strings": self.strings,
                    "attrs": self.attrs,
                    "unsupported": self.unsupported,
                    "order": self.order,
                },
                f,
                indent=1,
                sort_keys=True,
            )


def numeric():
    e = Expect()
    rng = np.random.default_rng(42)
    with h5py.File(os.path.join(OUT, "numeric.h5"), "w") as f:
        def add(name, data, **kw):
            ds = f.create_dataset(name, data=data, **kw)
            e.array("/" + name, ds)
            return ds

        add("gzip_shuffle", rng.integers(-1000, 1000, (50, 37), dtype=np.int32),
            chunks=(16, 10), compression="gzip", compression_opts=4, shuffle=True)
        add("gzip_f64", rng.normal(size=1000), chunks=(128,), compression="gzip", compression_opts=9)
        add("lzf_f32", rng.normal(size=(40, 30)).astype(np.float32), chunks=(16, 16), compression="lzf")
        add("lzf_shuffle_i64", np.arange(3000, dtype=np.int64) * 7, chunks=(256,), compression="lzf",
            shuffle=True)
        add("fletcher_gzip_i16", rng.integers(-30000, 30000, 1000, dtype=np.int16), chunks=(100,),
            compression="gzip", fletcher32=True)
        add("fletcher_u8_odd", rng.integers(0, 255, 101, dtype=np.uint8), chunks=(33,), fletcher32=True)
        add("contiguous_f64", rng.normal(size=(20, 7)))
        add("chunked_3d", np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7), chunks=(2, 4, 3))
        # Never written: contiguous storage stays unallocated, reads give the fill value.
        ds = f.create_dataset("unallocated_contig", shape=(10,), dtype=np.int32, fillvalue=7)
        e.array("/unallocated_contig", ds)
        ds = f.create_dataset("fill_chunked", shape=(100,), dtype=np.int32, chunks=(10,), fillvalue=-5,
                              compression="gzip")
        ds[20:30] = np.arange(10)
        ds[75:80] = 99
        e.array("/fill_chunked", ds)
        ds = f.create_dataset("fill_f32_2d", shape=(9, 9), dtype=np.float32, chunks=(4, 4), fillvalue=1.5)
        ds[0:4, 4:8] = 2.0
        e.array("/fill_f32_2d", ds)
        add("be_i32", np.arange(-50, 50, dtype=">i4"), chunks=(32,), compression="gzip", shuffle=True)
        add("be_f64", rng.normal(size=33).astype(">f8"))
        add("be_u16", np.arange(70, dtype=">u2"), chunks=(16,))
        add("be_i64_contig", np.arange(-5, 5, dtype=">i8"))
        add("f16", rng.normal(size=33).astype(np.float16), chunks=(8,))
        add("bool", rng.integers(0, 2, 23).astype(bool), chunks=(8,), compression="gzip")
        add("bool_contig", np.array([True, False, True]))
        for t in ["i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"]:
            info = np.iinfo(t)
            add("int_" + t, np.array([info.min, 0, 1, info.max], dtype=t))
        add("c64", (rng.normal(size=5) + 1j * rng.normal(size=5)).astype(np.complex64))
        add("c128", (rng.normal(size=5) + 1j * rng.normal(size=5)), chunks=(2,))
        add("scalar_f64", np.float64(3.5))
        add("scalar_i64", np.int64(-12345678901))
        add("empty_f64", np.zeros((0,), dtype=np.float64))
        add("empty_2d_chunked", np.zeros((0, 5), dtype=np.int32), chunks=(4, 5), maxshape=(None, 5))
        f.create_dataset("null", data=h5py.Empty("f8"))
        # Compact layout through the low-level API.
        data = np.arange(12, dtype=">i4").reshape(3, 4)
        space = h5py.h5s.create_simple((3, 4))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        dsid = h5py.h5d.create(f.id, b"compact_be_i32", h5py.h5t.STD_I32BE, space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
        e.array("/compact_be_i32", f["compact_be_i32"])
        # scaleoffset (filter id 6) is valid HDF5 that annfs does not decode.
        f.create_dataset("scaleoffset", data=np.arange(100, dtype=np.int32), chunks=(10,), scaleoffset=0)
        e.unsupported.append("/scaleoffset")
    e.dump("numeric")


def strings():
    e = Expect()
    with h5py.File(os.path.join(OUT, "strings.h5"), "w") as f:
        def add(name, data, **kw):
            ds = f.create_dataset(name, data=data, **kw)
            e.strs("/" + name, ds)

        utf8 = h5py.string_dtype("utf-8")
        add("vlen_utf8", np.array(["a", "", "héllo", "日本語", "x" * 300], dtype=object), dtype=utf8)
        add("vlen_ascii", np.array([b"abc", b"de"], dtype=object), dtype=h5py.string_dtype("ascii"))
        add("fixed_S", np.array([b"cell_1", b"c2", b"", b"abcdefghij"], dtype="S10"))
        add("vlen_2d", np.array([["a", "b", "c"], ["d", "e", "f"]], dtype=object), dtype=utf8)
        add("vlen_chunked_gzip", np.array([f"gene_{i}" for i in range(100)], dtype=object), dtype=utf8,
            chunks=(16,), compression="gzip")
        add("scalar_vlen", "just one string", dtype=utf8)
        add("scalar_fixed", np.bytes_(b"fixed!"))
        add("empty_vlen", np.array([], dtype=object), dtype=utf8)
        # Invalid UTF-8 bytes in a vlen string: must come back lossy, not fail.
        f.create_dataset("bad_utf8", data=np.array([b"ok", b"\xff\xfe"], dtype=object),
                         dtype=h5py.string_dtype("ascii"))
        e.strings["/bad_utf8"] = ["ok", "\ufffd\ufffd"]
    e.dump("strings")


def attrs():
    e = Expect()
    with h5py.File(os.path.join(OUT, "attrs.h5"), "w") as f:
        obs = f.create_group("obs")
        cats = obs.create_group("__categories")
        cats.create_dataset("cell_type", data=np.array(["B", "T"], dtype=object),
                            dtype=h5py.string_dtype())
        codes = obs.create_dataset("cell_type", data=np.array([0, 1, 1, 0], dtype=np.int8))
        codes.attrs["categories"] = cats["cell_type"].ref
        e.attrs["/obs/cell_type"] = {"categories": "/obs/__categories/cell_type"}
        e.array("/obs/cell_type", codes)
        e.strs("/obs/__categories/cell_type", cats["cell_type"])

        a = f.attrs
        a["encoding-type"] = "anndata"  # vlen utf-8 scalar
        a["fixed_str"] = np.bytes_(b"fixed")  # fixed-length ascii scalar
        a["str_array"] = np.array(["x", "yy", "zzz"], dtype=h5py.string_dtype())
        a["fixed_str_array"] = np.array([b"ab", b"c"], dtype="S2")
        a["int"] = np.int64(-7)
        a["uint8"] = np.uint8(200)
        a["float"] = np.float64(0.25)
        a["f32"] = np.float32(1.5)
        a["int_array"] = np.array([1, 2, 3], dtype=np.int32)
        a["be_int_array"] = np.array([1, -2], dtype=">i4")
        a["float_array"] = np.array([0.5, -1.0])
        a["int_2d"] = np.array([[1, 2], [3, 4]], dtype=np.int16)
        a["bool_true"] = np.bool_(True)
        a["bool_false"] = np.bool_(False)
        a["bool_array"] = np.array([True, False])
        a["column-order"] = np.array([], dtype=np.float64)
        a["shape"] = np.array([4, 3], dtype=np.uint64)
        a["group_ref"] = obs.ref
        e.attrs["/"] = {
            "encoding-type": "anndata",
            "fixed_str": "fixed",
            "str_array": ["x", "yy", "zzz"],
            "fixed_str_array": ["ab", "c"],
            "int": -7,
            "uint8": 200,
            "float": 0.25,
            "f32": 1.5,
            "int_array": [1, 2, 3],
            "be_int_array": [1, -2],
            "float_array": [0.5, -1.0],
            "int_2d": [[1, 2], [3, 4]],
            "bool_true": True,
            "bool_false": False,
            "bool_array": [True, False],
            "column-order": [],
            "shape": [4, 3],
            "group_ref": "/obs",
        }
        obs.attrs["_index"] = "cell"
        obs.attrs["encoding-version"] = "0.1.0"
        e.attrs["/obs"] = {"_index": "cell", "encoding-version": "0.1.0"}
        # An attribute of a type annfs skips (an opaque blob): the open must not fail.
        ds = f.create_dataset("with_odd_attr", data=np.arange(3, dtype=np.int8))
        ds.attrs["opaque"] = np.void(b"\x01\x02\x03")
        ds.attrs["ok"] = 1
        e.attrs["/with_odd_attr"] = {"ok": 1}
    e.dump("attrs")


def compound():
    e = Expect()
    with h5py.File(os.path.join(OUT, "compound.h5"), "w") as f:
        dt = np.dtype([("index", "S8"), ("n_genes", "<i4"), ("frac", ">f8"), ("X_pca", "<f4", (5,)),
                       ("flag", "?"), ("code", "i1")])
        rec = np.zeros(13, dtype=dt)
        rec["index"] = [f"cell{i}".encode() for i in range(13)]
        rec["n_genes"] = np.arange(13) * 100
        rec["frac"] = np.linspace(0, 1, 13)
        rec["X_pca"] = np.arange(13 * 5, dtype=np.float32).reshape(13, 5) / 3
        rec["flag"] = np.arange(13) % 2 == 0
        rec["code"] = np.arange(13) % 3
        f.create_dataset("obs", data=rec)
        f.create_dataset("obs_chunked", data=rec, chunks=(4,), compression="gzip")
        packed = np.dtype([("index", "S8"), ("n_genes", "<i4"), ("frac", "<f8"), ("X_pca", "<f4", (5,)),
                           ("flag", "?"), ("code", "i1")])
        bytes_ = rec.astype(packed).tobytes()
        for p in ["/obs", "/obs_chunked"]:
            e.arrays[p] = {"dtype": "compound", "shape": [13], "hex": bytes_.hex(),
                           "record_size": packed.itemsize}
        # A compound with a variable-length string field.
        vdt = np.dtype([("index", h5py.string_dtype()), ("value", "<f8")])
        v = np.array([("a", 1.0), ("bé", 2.0), ("c", 3.0)], dtype=vdt)
        f.create_dataset("vlen_field", data=v)
        e.arrays["/vlen_field"] = {"dtype": "compound", "shape": [3],
                                   "hex": np.array([1.0, 2.0, 3.0], dtype="<f8").tobytes().hex(),
                                   "record_size": 8, "vlen_fields": {"index": ["a", "bé", "c"]}}
    e.dump("compound")


def latest():
    e = Expect()
    with h5py.File(os.path.join(OUT, "latest.h5"), "w", libver="latest", track_order=True) as f:
        g = f.create_group("zeta", track_order=True)
        for name in ["c", "a", "b"]:
            ds = g.create_dataset(name, data=np.arange(5, dtype=np.int32) * ord(name))
            e.array(f"/zeta/{name}", ds)
        f.create_group("alpha")
        e.order["/"] = ["zeta", "alpha", "fixed_array", "extensible", "btree2", "single", "contig", "strs",
                        "fixed_plain", "fixed_paged", "fixed_paged_gzip", "single_plain", "implicit",
                        "ext_gzip", "ext_sparse"]
        e.order["/zeta"] = ["c", "a", "b"]
        rng = np.random.default_rng(1)
        def add(name, data, **kw):
            ds = f.create_dataset(name, data=data, **kw)
            e.array("/" + name, ds)
        add("fixed_array", rng.normal(size=(30, 20)), chunks=(8, 8), compression="gzip", shuffle=True)
        add("extensible", np.arange(1000, dtype=np.int64), chunks=(64,), maxshape=(None,),
            compression="gzip")
        add("btree2", np.arange(200, dtype=np.float32).reshape(20, 10), chunks=(6, 4), maxshape=(None, None),
            compression="lzf")
        add("single", np.arange(50, dtype=np.uint8), chunks=(50,), compression="gzip")
        add("contig", np.arange(10, dtype=np.int16))
        ds = f.create_dataset("strs", data=np.array(["p", "q"], dtype=object), dtype=h5py.string_dtype())
        e.strs("/strs", ds)
        # Every version-4 chunk index the reader parses itself (annfs's chunk_index.rs and
        # fixed_array.rs): a fixed array of plain chunks; paged ones (more than 2^10 chunks), one
        # with pages never written; a plain single chunk; and an implicit index (early
        # allocation), which is left to the library.
        add("fixed_plain", rng.integers(0, 1000, size=(30, 20)).astype(np.int32), chunks=(8, 8))
        ds = f.create_dataset("fixed_paged", shape=(5000,), dtype=np.int16, chunks=(2,), fillvalue=-1)
        ds[:100] = np.arange(100, dtype=np.int16)
        ds[4990:] = np.arange(10, dtype=np.int16)
        e.array("/fixed_paged", ds)
        add("fixed_paged_gzip", np.arange(3000, dtype=np.float64) / 7, chunks=(2,), compression="gzip")
        add("single_plain", np.arange(24, dtype=np.float32).reshape(4, 6), chunks=(4, 6))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((8,))
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dsid = h5py.h5d.create(f.id, b"implicit", h5py.h5t.STD_I32LE, h5py.h5s.create_simple((40,)), dcpl=dcpl)
        ds = h5py.Dataset(dsid)
        ds[...] = np.arange(40, dtype=np.int32)
        e.array("/implicit", ds)
        # Extensible arrays (resizable): filtered entries through several super blocks; and
        # 140,000 one-byte chunks, few written, so that the index block, super blocks, data
        # blocks never allocated and a paged data block with a page never written all occur
        # (its data is not in the expectations: the chunk-index test compares its table with
        # the library's).
        add("ext_gzip", np.arange(4000, dtype=np.int64), chunks=(4,), maxshape=(None,), compression="gzip")
        ds = f.create_dataset("ext_sparse", shape=(140000,), maxshape=(None,), dtype=np.uint8, chunks=(1,), fillvalue=7)
        ds[:50] = np.arange(50, dtype=np.uint8)
        ds[131100:131200] = 1
        ds[139990:] = 2
        f.attrs["encoding-type"] = "anndata"
        e.attrs["/"] = {"encoding-type": "anndata"}
    with h5py.File(os.path.join(OUT, "name_order.h5"), "w") as f:
        for name in ["b", "c", "a"]:
            f.create_group(name)
        e2 = Expect()
        e2.order["/"] = ["a", "b", "c"]
        e2.dump("name_order")
    e.dump("latest")


def bad_files():
    with open(os.path.join(OUT, "not_hdf5.h5ad"), "wb") as f:
        f.write(b"this is plain text, not an HDF5 file\n" * 20)
    src = os.path.join(OUT, "numeric.h5")
    data = open(src, "rb").read()
    with open(os.path.join(OUT, "truncated.h5"), "wb") as f:
        f.write(data[: len(data) // 3])
    # A 512-byte user block moves the signature to offset 512.
    with h5py.File(os.path.join(OUT, "userblock.h5"), "w", userblock_size=512) as f:
        f.create_dataset("x", data=np.arange(4, dtype=np.int32))
    e = Expect()
    e.arrays["/x"] = {"dtype": "<i4", "shape": [4], "hex": np.arange(4, dtype="<i4").tobytes().hex()}
    e.dump("userblock")


def main():
    os.makedirs(OUT, exist_ok=True)
    numeric()
    strings()
    attrs()
    compound()
    latest()
    bad_files()
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, name))
        print(f"{name:24} {size:8d}")
        if size > 200_000:
            sys.exit(f"{name} is too large for a fixture")


if __name__ == "__main__":
    main()
