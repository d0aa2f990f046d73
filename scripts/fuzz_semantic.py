"""Seeded semantic damage for copies of `.h5ad` files and Zarr stores (used by fuzz_stores.py).

Byte damage ([`fuzz_mutations`]) mostly breaks a file's structure, which the HDF5 library or
annfs's own parsers then refuse. This module keeps the file valid HDF5 and lies about the
AnnData inside it instead, through h5py: datasets resized (chunked, the new chunks never
written, so the file stays small while its shape grows), attributes changed or removed
(`encoding-type`, `shape`, `_index`, `column-order`, ...), hostile values written (an `indptr`
running backwards, codes past the categories), datasets retyped or reshaped, members deleted,
renamed (one in four to a name of 300+ bytes), or replaced by links (a group holding itself, a
link to nothing). A Zarr store's metadata stays valid JSON the same way: shapes grown over chunks
never written, chunk shapes shrunk, dtypes, fill values and codecs swapped, attributes changed,
nodes deleted or renamed (one in four to 250 bytes),
with the consolidated copy changed alike (or, one time in five, left behind). The hand-made stores
that found the chunk-count and categories-length hangs were of this kind.

Every function takes a `random.Random` and returns short descriptions of what it did, so a case
is understood from its record and reproduced from its seed.
"""

import json
import shutil
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np

# Lengths a dataset is resized to: around its own length, and far past it (a million-fold
# claim in a kilobyte file). Capped at 2^24 elements: a real store that long is served (a text
# view of it is a legitimate pass of seconds, not a hang).
GROWTH = [0, 1, -1, +1, 2, 1 << 16, 1 << 20, 1 << 24]
CHUNKS = [1, 3, 64, 4096]
ENCODINGS = ["csr_matrix", "csc_matrix", "categorical", "dataframe", "array", "string-array",
             "nullable-integer", "nullable-boolean", "nullable-string-array", "dict", "awkward-array",
             "rec-array", "raw", "anndata", "numeric-scalar", "string", "nonsense", ""]
VERSIONS = ["0.1.0", "0.2.0", "0.9.9", "", "x"]
HOSTILE_INTS = [-1, -(2**31), 2**31 - 1, 2**32, 2**62, 7]
HOSTILE_FLOATS = [np.nan, np.inf, -np.inf, -0.0, 3.4e38, 1e-45]
RETYPES = ["i1", "u8", "f2", "f8", "?", "c8", "S3", "str", "compound"]


def _long_name(name):
    """Whether a renamed member gets a name of 250+ bytes (by the name's CRC-32: one in four)."""
    return zlib.crc32(name.encode()) % 4 == 0


def _elements(f):
    """(name, object) of every group and dataset below the root, in a stable order."""
    out = []
    f.visititems(lambda name, obj: out.append((name, obj)))
    return sorted(out, key=lambda t: t[0])


def _replace(ds, make):
    """Replaces dataset `ds` by `make(parent, name)`, keeping its attributes."""
    parent, name = ds.parent, ds.name.rsplit("/", 1)[1]
    attrs = dict(ds.attrs)
    tmp = name + "\x01old"
    parent.move(name, tmp)
    new = make(parent, name)
    for k, v in attrs.items():
        try:
            new.attrs[k] = v
        except (TypeError, ValueError, OSError):
            pass
    del parent[tmp]
    return new


def _resize(rng, ds):
    if ds.shape is None or len(ds.shape) == 0:
        return "resize: scalar, skipped"
    n = ds.shape[0]
    g = rng.choice(GROWTH)
    new_n = max(0, n + g) if g in (-1, 1) else (n * g if g in (0, 2) else g)
    chunk0 = rng.choice(CHUNKS)
    data = ds[()]

    def make(parent, name):
        rest = tuple(ds.shape[1:])
        chunks = (chunk0,) + tuple(max(1, min(8, d)) for d in rest)
        d = parent.create_dataset(name, shape=ds.shape, dtype=ds.dtype, chunks=chunks,
                                  maxshape=(None,) + rest)
        if data.size:
            d[()] = data
        d.resize((new_n,) + rest)
        return d

    _replace(ds, make)
    return f"resize {n}->{new_n} chunk {chunk0}"


def _attr(rng, obj):
    key = rng.choice(["encoding-type", "encoding-version", "shape", "h5sparse_shape", "_index",
                      "column-order", "ordered", "h5sparse_format", "delete"])
    if key == "delete":
        if not obj.attrs:
            return "attr: none to delete"
        k = rng.choice(sorted(obj.attrs.keys()))
        del obj.attrs[k]
        return f"attr del {k}"
    members = sorted(obj.keys()) if isinstance(obj, h5py.Group) else []
    if key == "encoding-type":
        value = rng.choice(ENCODINGS)
    elif key == "encoding-version":
        value = rng.choice(VERSIONS)
    elif key in ("shape", "h5sparse_shape"):
        value = np.array(rng.choice([[2**40, 2**40], [-1, 3], [0, 0], [3, 2**62], [7], [1, 2, 3],
                                     [2**24, 5]]), dtype=np.int64)
    elif key == "_index":
        value = rng.choice(members + ["missing", "", "_index"])
    elif key == "column-order":
        picks = [rng.choice(members + ["missing"]) for _ in range(rng.randint(0, 4))]
        value = np.array(picks, dtype=h5py.string_dtype()) if picks else np.array([], dtype="S1")
    elif key == "ordered":
        value = rng.choice([True, False, "x", 7])
    else:
        value = rng.choice(["csr", "csc", "coo", ""])
    try:
        obj.attrs[key] = value
    except (TypeError, ValueError, OSError) as e:
        return f"attr {key}: {type(e).__name__}"
    return f"attr {key}={str(value)[:24]}"


def _values(rng, ds):
    if ds.shape is None or ds.size == 0 or ds.dtype.kind not in "iufb":
        return "values: skipped"
    data = ds[()]
    flat = data.reshape(-1)
    op = rng.choice(["points", "reverse", "shuffle", "all"])
    if op in ("reverse", "shuffle") and data.ndim >= 1:
        data = data[::-1].copy() if op == "reverse" else data[np.random.default_rng(rng.getrandbits(32)).permutation(len(data))]
    else:
        k = flat.size if op == "all" else rng.randint(1, min(4, flat.size))
        for _ in range(k):
            i = rng.randrange(flat.size)
            if ds.dtype.kind == "f":
                flat[i] = rng.choice(HOSTILE_FLOATS)
            elif ds.dtype.kind == "b":
                flat[i] = not flat[i]
            else:
                info = np.iinfo(ds.dtype)
                v = rng.choice(HOSTILE_INTS + [int(flat.size), int(flat.size) + 1])
                flat[i] = min(max(v, info.min), info.max)
    ds[()] = data
    return f"values {op}"


def _retype(rng, ds):
    if ds.shape is None:
        return "retype: empty, skipped"
    t = rng.choice(RETYPES)
    data = ds[()]
    shape = ds.shape

    def make(parent, name):
        if t == "str":
            vals = np.array([str(x)[:8] for x in np.asarray(data).reshape(-1)], dtype=object).reshape(shape)
            return parent.create_dataset(name, data=vals, dtype=h5py.string_dtype())
        if t == "compound":
            dt = np.dtype([("a", "<i4"), ("b", "<f8")])
            return parent.create_dataset(name, shape=shape, dtype=dt)
        try:
            vals = np.asarray(data).astype(t)
        except (TypeError, ValueError):
            vals = np.zeros(shape, dtype=t)
        return parent.create_dataset(name, data=vals)

    _replace(ds, make)
    return f"retype {t}"


def _reshape(rng, ds):
    op = rng.choice(["column", "scalar", "empty", "null", "transpose"])
    data = ds[()] if ds.shape is not None else None

    def make(parent, name):
        dt = ds.dtype
        if op == "column" and data is not None and np.ndim(data) >= 1:
            return parent.create_dataset(name, data=np.asarray(data).reshape(len(data), -1)[:, :1].repeat(2, 1))
        if op == "scalar":
            return parent.create_dataset(name, shape=(), dtype=dt)
        if op == "null":
            return parent.create_dataset(name, data=h5py.Empty(dt))
        if op == "transpose" and data is not None and np.ndim(data) == 2:
            return parent.create_dataset(name, data=np.ascontiguousarray(np.asarray(data).T))
        return parent.create_dataset(name, shape=(0,) + tuple(ds.shape[1:] if ds.shape else ()), dtype=dt)

    try:
        _replace(ds, make)
    except (TypeError, ValueError) as e:
        return f"reshape {op}: {type(e).__name__}"
    return f"reshape {op}"


def _member(rng, f, name, obj):
    parent = obj.parent
    base = name.rsplit("/", 1)[-1]
    op = rng.choice(["delete", "rename", "self-link", "root-link", "dangling", "other", "external"])
    if op == "rename":
        # One name in four (chosen by the name, not the RNG, so earlier seeds replay) becomes longer than
        # a path component allows, which the mount must cut (docs/TREE.md).
        new = base + ("_" * 300 if _long_name(name) else "_")
        parent.move(base, new)
        return f"rename {name}" + (" (long)" if len(new) > 255 else "")
    del parent[base]
    if op == "self-link":
        parent[base] = parent  # a group holding itself: the hierarchy has a cycle
    elif op == "root-link":
        parent[base] = f["/"]
    elif op == "dangling":
        parent[base] = h5py.SoftLink("/no/such/element")
    elif op == "external":
        parent[base] = h5py.ExternalLink("no-such-file.h5", "/x")
    elif op == "other":
        others = [o for n, o in _elements(f) if n != name and not n.startswith(name + "/")]
        if others:
            parent[base] = rng.choice(others)
    return f"{op} {name}"


def damage_h5_semantic(path, rng):
    """Applies 1 to 3 semantic damages to the HDF5 file at `path` (kept valid HDF5); returns
    descriptions."""
    done = []
    # Casting hostile values into small types overflows on purpose.
    with warnings.catch_warnings(), np.errstate(all="ignore"), h5py.File(path, "r+") as f:
        warnings.simplefilter("ignore")
        for _ in range(rng.choice([1, 1, 2, 3])):
            els = _elements(f)
            if not els:
                break
            name, obj = rng.choice(els)
            is_ds = isinstance(obj, h5py.Dataset)
            kinds = ["attr", "member"] + (["resize", "values", "retype", "reshape"] * 2 if is_ds else [])
            kind = rng.choice(kinds)
            try:
                if kind == "attr":
                    what = _attr(rng, obj)
                elif kind == "member":
                    what = _member(rng, f, name, obj)
                else:
                    what = {"resize": _resize, "values": _values, "retype": _retype,
                            "reshape": _reshape}[kind](rng, obj)
            except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
                what = f"{kind}: h5py refused ({type(e).__name__})"
            done.append(f"sem:{name}: {what}")
    return done


# --- Zarr -----------------------------------------------------------------------------------------

V2_DTYPES = ["<i1", "<u8", "<f2", "<f8", "|b1", "<c8", "|S3", "|O", ">i4", "<M8[ns]"]
V3_DTYPES = ["int8", "uint64", "float16", "float64", "bool", "complex64", "string", "int32"]
FILLS = [None, "NaN", "Infinity", 2**63, -1, "", "AAAA", 0.5, [1, 2]]


class _ZarrDocs:
    """The metadata documents of a store: each node's own file and, when the store is consolidated,
    its entry in the consolidated metadata — both changed alike unless asked otherwise."""

    def __init__(self, root):
        self.root = root
        self.v3 = (root / "zarr.json").exists()
        self.files = sorted(p for p in root.rglob("zarr.json" if self.v3 else ".z*")
                            if p.name in ("zarr.json", ".zarray", ".zattrs"))
        cons = root / ("zarr.json" if self.v3 else ".zmetadata")
        self.cons_path = cons if cons.exists() else None
        cons = self.load(self.cons_path) if self.cons_path else None
        self.cons = cons if isinstance(cons, dict) else None

    def _entries(self):
        if self.cons is None:
            return None
        if self.v3:
            return (self.cons.get("consolidated_metadata") or {}).get("metadata")
        return self.cons.get("metadata")

    def key(self, p):
        rel = p.relative_to(self.root)
        return str(rel.parent) if self.v3 else str(rel)

    def load(self, p):
        try:
            return json.loads(p.read_text())
        except ValueError:
            return None

    def store(self, p, doc, both=True):
        """Writes `doc` as `p`'s content (and its consolidated entry when `both`)."""
        entries = self._entries()
        k = self.key(p)
        if p == self.cons_path and self.v3:
            keep = self.cons.get("consolidated_metadata") if self.cons else None
            if keep is not None and "consolidated_metadata" not in doc:
                doc["consolidated_metadata"] = keep
            self.cons = doc
        elif both and entries is not None and k in entries:
            entries[k] = doc
        p.write_text(json.dumps(doc))
        if self.cons is not None and p != self.cons_path:
            self.cons_path.write_text(json.dumps(self.cons))


def _zarr_array(rng, doc, v3):
    op = rng.choice(["grow", "dtype", "fill", "codecs", "order", "separator", "chunks"])
    shape = doc.get("shape")
    if op in ("grow", "chunks") and isinstance(shape, list) and shape and isinstance(shape[0], int):
        g = rng.choice(GROWTH)
        n = shape[0]
        shape[0] = max(0, n + g) if g in (-1, 1) else (n * g if g in (0, 2) else g)
        c = rng.choice(CHUNKS)
        if v3 and op == "chunks":
            conf = (doc.get("chunk_grid") or {}).get("configuration") or {}
            if isinstance(conf.get("chunk_shape"), list) and conf["chunk_shape"]:
                conf["chunk_shape"][0] = c
        elif op == "chunks" and isinstance(doc.get("chunks"), list) and doc["chunks"]:
            doc["chunks"][0] = c
        return f"{op} {n}->{shape[0]}" + (f" chunk {c}" if op == "chunks" else "")
    if op == "dtype":
        key, t = ("data_type", rng.choice(V3_DTYPES)) if v3 else ("dtype", rng.choice(V2_DTYPES))
        doc[key] = t
        return f"dtype {t}"
    if op == "fill":
        doc["fill_value"] = rng.choice(FILLS)
        return f"fill {str(doc['fill_value'])[:12]}"
    if op == "codecs":
        if v3:
            doc["codecs"] = [{"name": "bytes", "configuration": {"endian": rng.choice(["little", "big"])}}]
        else:
            doc["compressor"] = None
            doc["filters"] = rng.choice([None, [{"id": "delta", "dtype": "<i8"}]])
        return "codecs stripped"
    if op == "order" and not v3:
        doc["order"] = "F"
        return "order F"
    if op == "separator" and not v3:
        doc["dimension_separator"] = "/" if doc.get("dimension_separator", ".") == "." else "."
        return "separator swapped"
    return f"{op}: skipped"


def _zarr_attrs(rng, attrs, members):
    key = rng.choice(["encoding-type", "encoding-version", "shape", "_index", "column-order", "ordered",
                      "categories", "delete"])
    if key == "delete":
        if not attrs:
            return "attr: none to delete"
        k = rng.choice(sorted(attrs))
        del attrs[k]
        return f"attr del {k}"
    attrs[key] = {
        "encoding-type": lambda: rng.choice(ENCODINGS),
        "encoding-version": lambda: rng.choice(VERSIONS),
        "shape": lambda: rng.choice([[2**40, 2**40], [-1, 3], [0, 0], [3, 2**62], [7], [2**24, 5]]),
        "_index": lambda: rng.choice(members + ["missing", ""]),
        "column-order": lambda: [rng.choice(members + ["missing"]) for _ in range(rng.randint(0, 4))],
        "ordered": lambda: rng.choice([True, "x", 7]),
        "categories": lambda: rng.choice(members + ["missing"]),
    }[key]()
    return f"attr {key}={str(attrs[key])[:24]}"


def damage_zarr_semantic(root, rng):
    """Applies 1 to 3 semantic damages to the Zarr store at `root` (its metadata kept valid JSON,
    the consolidated copy changed alike, 1 time in 5 not); returns descriptions."""
    root = Path(root)
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        docs = _ZarrDocs(root)
        if not docs.files:
            break
        p = rng.choice(docs.files)
        doc = docs.load(p)
        if not isinstance(doc, dict):
            continue
        rel = str(p.relative_to(root))
        both = rng.random() < 0.8
        node = p.parent
        kind = rng.choice(["array", "attrs", "attrs", "member"])
        if kind == "member" and node != root:
            op = rng.choice(["delete", "rename"])
            if op == "delete":
                shutil.rmtree(node)
            else:
                long = _long_name(rel) and len(node.name) < 250
                node.rename(node.with_name(node.name + "_" * (250 - len(node.name) if long else 1)))
            done.append(f"zsem:{rel}: {op} node (consolidated copy kept)")
            continue
        is_array = (doc.get("node_type") == "array") if docs.v3 else p.name == ".zarray"
        members = sorted(c.name for c in node.iterdir() if c.is_dir())
        if kind == "array" and is_array:
            what = _zarr_array(rng, doc, docs.v3)
        elif docs.v3:
            what = _zarr_attrs(rng, doc.setdefault("attributes", {}), members)
        elif p.name == ".zattrs":
            what = _zarr_attrs(rng, doc, members)
        else:
            continue
        docs.store(p, doc, both)
        done.append(f"zsem:{rel}: {what}{'' if both else ' (not consolidated)'}")
    return done
