"""Seeded damage for copies of HDF5 files and zarr directories (used by fuzz_stores.py).

Every function takes a `random.Random` and returns a list of short descriptions of what it did,
so a case can be understood from its record and reproduced from its seed.

HDF5 targets are found by their signatures (`OHDR`, `TREE`, `BTHD`, `FAHD`, `EAHD`, `GCOL`, ...)
and with h5py (object header addresses, chunk and contiguous data addresses). The issue-9 hangs
came from a zeroed range over a global heap collection (`GCOL`): the library's parser then loops
on object 0 of size 0; `gcol` damage reproduces that case on purpose.
"""

import json
import threading
from pathlib import Path

SIGNATURES = {
    b"OHDR": "ohdr", b"OCHK": "ohdr",
    b"TREE": "index", b"SNOD": "index", b"HEAP": "index", b"BTHD": "index", b"BTIN": "index",
    b"BTLF": "index", b"FAHD": "index", b"FADB": "index", b"EAHD": "index", b"EAIB": "index",
    b"EASB": "index", b"EADB": "index", b"FRHP": "index", b"FHDB": "index", b"FHIB": "index",
    b"GCOL": "gcol",
}
ZARR_META = {".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"}
ODD_VALUES = [2**63, 2**64 + 5, -1, 0, 10**12, "", "x", None, [], {}, [0], [10**9, 10**9], 1.5,
              "NaN", True, [[[[[]]]]], "<f16", "|O", {"id": "nope"}, [2**62, 3]]

_regions = {}
_regions_lock = threading.Lock()


def h5_regions(path, data):
    """Offsets of HDF5 structures in `data` (a fixture's bytes), by kind; cached per fixture."""
    key = (Path(path).name, len(data))
    with _regions_lock:
        if key in _regions:
            return _regions[key]
        reg = {"superblock": [0], "ohdr": [], "index": [], "gcol": [], "chunk": []}
        for sig, kind in SIGNATURES.items():
            i = data.find(sig)
            while i >= 0:
                reg[kind].append(i)
                i = data.find(sig, i + 1)
        try:
            _h5py_regions(path, reg)
        except Exception:  # a damaged or odd file: signatures only
            pass
        for k in reg:
            reg[k] = sorted(set(reg[k]))
        _regions[key] = reg
        return reg


def _h5py_regions(path, reg):
    import h5py

    with h5py.File(path, "r") as f:
        reg["ohdr"].append(h5py.h5o.get_info(f["/"].id).addr)

        def visit(_, obj):
            reg["ohdr"].append(h5py.h5o.get_info(obj.id).addr)
            if isinstance(obj, h5py.Dataset):
                off = obj.id.get_offset()
                if off is not None:
                    reg["chunk"].append(off)
                elif obj.chunks is not None:
                    for i in range(min(obj.id.get_num_chunks(), 64)):
                        reg["chunk"].append(obj.id.get_chunk_info(i).byte_offset)

        f.visititems(visit)


def _span(rng, lo=0, hi=12):
    """A length 2^k, k uniform in [lo, hi]."""
    return 1 << rng.randint(lo, hi)


def _zero(b, at, n):
    at = max(0, min(at, len(b)))
    b[at:at + n] = bytes(len(b[at:at + n]))


def _flip(rng, b, at=0, span=None, count=None):
    if not b:
        return
    span = span or len(b)
    for _ in range(count or rng.choice([1, 1, 2, 4, 16])):
        i = min(len(b) - 1, at + rng.randrange(span))
        b[i] = b[i] ^ (1 << rng.randrange(8)) if rng.random() < 0.6 else rng.randrange(256)


def _put(b, at, raw):
    if 0 <= at < len(b):
        b[at:at + len(raw)] = raw[: len(b) - at]


def _hostile_u64(rng):
    return rng.choice([0, 1, 7, 2**31, 2**32 + 16, 2**40, 2**63 - 1, 2**64 - 1, rng.getrandbits(64)])


def _targeted(rng, b, at, kind):
    """One damage near offset `at` of a structure of `kind`; returns its description."""
    op = rng.choice(["zero", "flip", "ff", "random", "u64"])
    if kind == "gcol":
        op = rng.choice(["zero-objects", "zero-over", "size", "obj-size", "obj-index", op])
    if op == "zero":
        n = _span(rng, 1, 12)
        _zero(b, at + rng.randrange(64), n)
    elif op == "flip":
        _flip(rng, b, at, 64)
    elif op == "ff":
        _put(b, at + rng.randrange(48), b"\xff" * rng.randint(1, 8))
    elif op == "random":
        _put(b, at + rng.randrange(64), bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 32))))
    elif op == "u64":
        _put(b, at + rng.randrange(48), _hostile_u64(rng).to_bytes(8, "little"))
    elif op == "zero-objects":  # the issue-9 hang: header kept, objects zeroed
        _zero(b, at + 16 + 16 * rng.randrange(4), _span(rng, 3, 12))
    elif op == "zero-over":  # a zeroed range covering (part of) the collection
        start = max(0, at - rng.randrange(256))
        _zero(b, start, at - start + rng.randint(1, 4096))
    elif op == "size":
        _put(b, at + 8, _hostile_u64(rng).to_bytes(8, "little"))
    elif op == "obj-size":
        _put(b, at + 16 + 8, _hostile_u64(rng).to_bytes(8, "little"))
    elif op == "obj-index":
        _put(b, at + 16, rng.choice([0, 1, 2, 65535]).to_bytes(2, "little"))
    return f"{kind}:{op}@{at}"


def damage_h5(path, rng):
    """Damages the HDF5 file at `path` in place (1 to 3 damages); returns descriptions."""
    path = Path(path)
    b = bytearray(path.read_bytes())
    reg = h5_regions(path, bytes(b))
    done = []
    truncate = None
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choices(["flip", "zero", "truncate", "superblock", "ohdr", "index", "gcol", "chunk"],
                           weights=[12, 12, 8, 8, 15, 15, 22, 8])[0]
        if kind == "flip":
            _flip(rng, b)
            done.append("flip")
        elif kind == "zero":
            at, n = rng.randrange(len(b)), _span(rng, 2, 14)
            _zero(b, at, n)
            done.append(f"zero@{at}+{n}")
        elif kind == "truncate":
            truncate = rng.choice([rng.randrange(len(b)), len(b) - rng.randint(1, 4096)])
        else:
            spots = reg.get(kind) or [rng.randrange(len(b))]
            done.append(_targeted(rng, b, rng.choice(spots), kind))
    if truncate is not None:
        del b[max(0, truncate):]
        done.append(f"truncate@{max(0, truncate)}")
    path.write_bytes(bytes(b))
    return done


def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _mangle_json(rng, text):
    """Damaged JSON text: broken syntax, or a value replaced / key removed somewhere."""
    if rng.random() < 0.3:
        if not text:
            return "{", "empty->{"
        i = rng.randrange(len(text))
        op = rng.choice(["cut", "drop", "junk"])
        if op == "cut":
            return text[:i], "json:cut"
        if op == "drop":
            return text[:i] + text[i + 1:], "json:drop-char"
        return text[:i] + rng.choice(["}", "]", '"', ",", "\x00", "9e999"]) + text[i:], "json:junk"
    try:
        doc = json.loads(text)
    except ValueError:
        return text[: len(text) // 2], "json:cut"
    nodes = []

    def walk(node, depth):
        if isinstance(node, dict):
            for k in node:
                nodes.append((node, k))
                if depth < 8:
                    walk(node[k], depth + 1)
        elif isinstance(node, list):
            for i in range(len(node)):
                nodes.append((node, i))
                if depth < 8:
                    walk(node[i], depth + 1)

    walk(doc, 0)
    if not nodes:
        return json.dumps(rng.choice(ODD_VALUES)), "json:replace-root"
    parent, key = rng.choice(nodes)
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[key]
        return json.dumps(doc), f"json:del {key}"
    value = rng.choice(ODD_VALUES)
    parent[key] = value
    return json.dumps(doc), f"json:{key}={json.dumps(value)[:20]}"


def _shard_index_size(array_meta):
    """Bytes of the shard index of a sharded v3 array (`index_location` end), or None."""
    for codec in array_meta.get("codecs") or []:
        if isinstance(codec, dict) and codec.get("name") == "sharding_indexed":
            conf = codec.get("configuration", {})
            outer = array_meta["chunk_grid"]["configuration"]["chunk_shape"]
            n = 1
            for o, i in zip(outer, conf["chunk_shape"]):
                n *= -(-o // i)
            return 16 * n + 4, conf.get("index_location", "end")
    return None


def _damage_shard(rng, data, index_size, location):
    b = bytearray(data)
    if len(b) < index_size:
        return bytes(b), "shard:short"
    base = len(b) - index_size if location == "end" else 0
    n = (index_size - 4) // 16
    e = rng.randrange(n)
    field = rng.choice([0, 8])
    _put(b, base + 16 * e + field, _hostile_u64(rng).to_bytes(8, "little"))
    fix = rng.random() < 0.7
    if fix:  # a valid checksum, so the bad entry reaches the bounds checks
        body = bytes(b[base:base + index_size - 4])
        _put(b, base + index_size - 4, _crc32c(body).to_bytes(4, "little"))
    return bytes(b), f"shard:entry{e}.{'offset' if field == 0 else 'nbytes'}{'+crc' if fix else ''}"


def damage_zarr(root, rng):
    """Damages the zarr directory `root` in place (1 to 3 damages); returns descriptions."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    meta = [p for p in files if p.name in ZARR_META]
    chunks = [p for p in files if p.name not in ZARR_META]
    shards = []
    for p in meta:
        if p.name == "zarr.json":
            try:
                info = _shard_index_size(json.loads(p.read_text()))
            except (ValueError, KeyError, TypeError):
                info = None
            if info:
                shards += [(c, info) for c in chunks if p.parent in c.parents and c.parent != root]
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choices(["json", "chunk", "remove", "shard"], weights=[40, 35, 10, 15])[0]
        if kind == "shard" and shards:
            p, (size, loc) = rng.choice(shards)
            if p.exists():
                data, what = _damage_shard(rng, p.read_bytes(), size, loc)
                p.write_bytes(data)
                done.append(f"{what} {p.relative_to(root)}")
            continue
        if kind == "json" and meta:
            p = rng.choice(meta)
            if p.exists():
                text, what = _mangle_json(rng, p.read_text(errors="replace"))
                p.write_text(text)
                done.append(f"{what} {p.relative_to(root)}")
            continue
        pool = chunks or files
        if not pool:
            continue
        p = rng.choice(pool)
        if not p.exists():
            continue
        if kind == "remove":
            p.unlink()
            done.append(f"remove {p.relative_to(root)}")
            continue
        b = bytearray(p.read_bytes())
        op = rng.choice(["truncate", "flip", "zero", "garbage", "empty", "append"])
        if op == "truncate":
            del b[rng.randrange(len(b) + 1):]
        elif op == "flip":
            _flip(rng, b)
        elif op == "zero":
            _zero(b, rng.randrange(len(b) + 1), _span(rng, 0, 12))
        elif op == "garbage":
            b = bytearray(rng.getrandbits(8) for _ in range(rng.randint(1, 512)))
        elif op == "empty":
            b = bytearray()
        else:
            b += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
        p.write_bytes(bytes(b))
        done.append(f"chunk:{op} {p.relative_to(root)}")
    return done
