"""Independent Python implementation of the annfs virtual tree (docs/TREE.md, docs/FORMATS.md).

    expected_tree(store) -> {relative virtual path: exact bytes}
    expected_dirs(store) -> {relative directory path}

Built on `anndata.read_h5ad` ("the AnnData as anndata reads it") plus h5py for what anndata hides: stored sparse
arrays (`csr/`/`csc/` are the stored arrays, stored dtypes) and the stored dtype of categorical codes.

Not produced here (the tests only check that they exist / parse): `README.txt`, `.annfs/…`, `rows/…` (root and in
matrix directories), `10x/…`, `10x_v3/…`, `matrix.mtx`.

Readings chosen where the contract leaves room (also listed in the report / README of the test suite):
  * `obs/ var/ obsm/ varm/ obsp/ varp/ layers/ uns/` always exist, even when empty (a user expects `ls mnt/layers`
    to work on every AnnData); `raw/X raw/var raw/varm` exist when raw is present; `X/` only when X is not None.
  * The first header cell of obs.tsv/var.tsv/raw/var.tsv is the index name anndata reports (None -> empty).  For
    legacy (pre-0.7) files anndata names the index `index`, so their header starts with `index`.
  * uns scalars (anndata returns a numpy/Python scalar or str) -> `<key>.txt` only; 0-d numeric *arrays* (rare)
    -> `.npy` + `.txt`.  Legacy 1-element arrays stay 1-element arrays (`.npy` + `.txt`) because anndata returns
    them as arrays (strings among them become scalars, as anndata returns them).
  * uns keys, obsm/varm/layers/obsp/varp keys are used verbatim as file/directory names; only dataframe *column*
    names are percent-encoded (the contract only specifies the encoding for columns).
  * Empty uns dicts are empty directories.
  * A uns value of a kind the contract does not name (e.g. awkward array) is not rendered.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

warnings.simplefilter("ignore")

ALWAYS_DIRS = ("obs", "var", "obsm", "varm", "obsp", "varp", "layers", "uns")


# --------------------------------------------------------------------------------------------------------------
# Scalars -> text
# --------------------------------------------------------------------------------------------------------------

def quote(s: str) -> str:
    if any(c in s for c in '\t\r\n"'):
        return '"' + s.replace('"', '""') + '"'
    return s


def _float_text(x, dt) -> str:
    dt = np.dtype(dt)
    if dt == np.float64:
        s = repr(float(x))
    elif dt == np.float32:
        s = str(np.float32(x))
    elif dt == np.float16:
        s = str(np.float16(x))
    else:  # longdouble etc.: best effort
        s = repr(float(x))
    if s in ("nan", "-nan"):
        return "NaN"
    return s


def fmt_scalar(v, dtype=None) -> str:
    """Format one value (already unquoted semantics; quoting applied for strings)."""
    if v is None:
        return "NA"
    try:
        import pandas as pd
        if v is pd.NA or v is pd.NaT:
            return "NA"
    except Exception:  # pragma: no cover
        pass
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (bytes, np.bytes_)):
        return quote(bytes(v).rstrip(b"\0").decode("utf-8", "replace"))
    if isinstance(v, str):
        return quote(str(v))
    if isinstance(v, np.integer):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, np.floating):
        return _float_text(v, v.dtype)
    if isinstance(v, float):
        return _float_text(v, dtype if dtype is not None and np.dtype(dtype).kind == "f" else np.float64)
    if isinstance(v, (np.complexfloating, complex)):
        c = np.complex128(v) if isinstance(v, complex) else v
        part = np.float32 if c.dtype == np.complex64 else np.float64
        re, im = c.real, c.imag
        neg = im < 0 or (im == 0 and math.copysign(1.0, float(im)) < 0)
        return _float_text(re, part) + ("-" if neg else "+") + _float_text(-im if neg else im, part) + "j"
    raise TypeError(f"cannot format {type(v)!r}: {v!r}")


def lines(values) -> bytes:
    return "".join(v + "\n" for v in values).encode("utf-8")


def npy_bytes(arr) -> bytes:
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def array_text_rows(arr) -> list[str]:
    """1-D: one value per line; 2-D: tab-separated rows; >2-D: (shape[0], rest); 0-d: one line."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return [fmt_scalar(arr[()])]
    if arr.ndim == 1:
        return [fmt_scalar(x) for x in arr]
    arr = arr.reshape(arr.shape[0], -1)
    return ["\t".join(fmt_scalar(x) for x in row) for row in arr]


def string_array_lines(arr) -> list[str]:
    out = []
    for x in np.asarray(arr, dtype=object).ravel(order="C"):
        out.append(fmt_scalar(x) if x is not None else "NA")
    return out


# --------------------------------------------------------------------------------------------------------------
# Column names -> file names
# --------------------------------------------------------------------------------------------------------------

MAX_STEM = 200


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def cut(encoded: str, name: str, limit: int = MAX_STEM) -> str:
    """An encoded name longer than `limit` bytes: its first bytes (whole characters) + `%~` + the 16 hex digits
    of the FNV-1a 64 hash of the name's UTF-8 bytes, `limit` bytes in all (docs/TREE.md)."""
    raw = encoded.encode("utf-8")
    if len(raw) <= limit:
        return encoded
    tag = "%~" + format(fnv1a64(str(name).encode("utf-8")), "016x")
    return raw[:max(0, limit - len(tag))].decode("utf-8", "ignore") + tag


def encode_col_uncut(name: str) -> str:
    s = str(name).replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if s.startswith("."):
        s = "%2E" + s[1:]
    orig = str(name)
    if orig == "index" or orig.endswith((".codes", ".mask", ".categories")):
        last = s[-1]
        s = s[:-1] + "".join(f"%{b:02X}" for b in last.encode("utf-8"))
    return s


def encode_col(name: str) -> str:
    return cut(encode_col_uncut(name), name)


# --------------------------------------------------------------------------------------------------------------
# h5py helpers
# --------------------------------------------------------------------------------------------------------------

def _h5get(h5, *paths):
    for p in paths:
        if p is None:
            continue
        try:
            node = h5[p]
        except (KeyError, ValueError):
            continue
        return node
    return None


def _stored_codes_dtype(h5, df_paths, col):
    import h5py
    node = _h5get(h5, *df_paths)
    if node is None:
        return None
    if isinstance(node, h5py.Dataset):  # legacy compound dataframe
        names = node.dtype.names or ()
        return node.dtype[col] if col in names else None
    try:
        elem = node[col]
    except (KeyError, ValueError):
        return None
    if isinstance(elem, h5py.Group) and "codes" in elem:
        return elem["codes"].dtype
    if isinstance(elem, h5py.Dataset) and elem.dtype.kind in "iu":
        return elem.dtype
    return None


def _stored_sparse(h5, paths):
    """(format, data, indices, indptr) exactly as stored, or None."""
    import h5py
    node = _h5get(h5, *paths)
    if not isinstance(node, h5py.Group) or not all(k in node for k in ("data", "indices", "indptr")):
        return None
    fmt = node.attrs.get("encoding-type", node.attrs.get("h5sparse_format", None))
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    fmt = {"csr_matrix": "csr", "csc_matrix": "csc", "csr": "csr", "csc": "csc"}.get(fmt)
    if fmt is None:
        return None
    return fmt, node["data"][()], node["indices"][()], node["indptr"][()]


# --------------------------------------------------------------------------------------------------------------
# Tree builders
# --------------------------------------------------------------------------------------------------------------

class _Tree:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()

    def add(self, path: str, data: bytes):
        assert path not in self.files, f"duplicate virtual path {path}"
        self.files[path] = data
        self.mkdir(path.rsplit("/", 1)[0] if "/" in path else "")

    def mkdir(self, path: str):
        while path:
            self.dirs.add(path)
            path = path.rsplit("/", 1)[0] if "/" in path else ""


def _is_sparse(x):
    import scipy.sparse as sp
    return sp.issparse(x)


def _col_kind(s):
    """'cat', 'nullable', 'nullable-str', 'numeric', 'other'"""
    import pandas as pd
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        return "cat"
    if isinstance(dt, pd.StringDtype):
        return "nullable-str"
    if isinstance(dt, (pd.BooleanDtype,)) or (isinstance(dt, pd.api.extensions.ExtensionDtype)
                                              and getattr(dt, "_is_numeric", False)
                                              and isinstance(s.array, pd.arrays.IntegerArray)):
        return "nullable"
    if isinstance(s.array, (pd.arrays.IntegerArray, pd.arrays.BooleanArray, pd.arrays.FloatingArray)):
        return "nullable"
    if isinstance(dt, np.dtype) and dt.kind in "iufcb":
        return "numeric"
    return "other"


def column_text_values(s) -> list[str]:
    import pandas as pd
    kind = _col_kind(s)
    if kind == "cat":
        cats = s.cat.categories
        labels = [fmt_scalar(c) for c in cats.values]
        return ["NA" if c < 0 else labels[c] for c in s.cat.codes.to_numpy()]
    if kind in ("nullable", "nullable-str"):
        arr = s.array
        mask = np.asarray(pd.isna(arr))
        out = []
        if kind == "nullable":
            vals = arr.to_numpy(dtype=arr.dtype.numpy_dtype, na_value=_zero(arr.dtype.numpy_dtype))
            for v, m in zip(vals, mask):
                out.append("NA" if m else fmt_scalar(v))
        else:
            for v, m in zip(arr, mask):
                out.append("NA" if m else fmt_scalar(str(v)))
        return out
    vals = s.to_numpy()
    if kind == "numeric":
        return [fmt_scalar(v) for v in vals]
    out = []
    for v in vals:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append("NA")
        else:
            out.append(fmt_scalar(v))
    return out


def _zero(dt):
    return False if np.dtype(dt).kind == "b" else np.dtype(dt).type(0)


def dataframe_dir(t: _Tree, base: str, df, h5=None, h5paths=()):
    """Files of a dataframe directory rooted at `base`."""
    import pandas as pd
    t.mkdir(base)
    t.add(f"{base}/index.txt", lines(fmt_scalar(v) for v in df.index.values))
    for col in df.columns:
        s = df[col]
        enc = encode_col(col)
        t.add(f"{base}/{enc}.txt", lines(column_text_values(s)))
        kind = _col_kind(s)
        if kind == "numeric":
            t.add(f"{base}/{enc}.npy", npy_bytes(s.to_numpy()))
        elif kind == "nullable":
            arr = s.array
            ndt = arr.dtype.numpy_dtype
            t.add(f"{base}/{enc}.npy", npy_bytes(arr.to_numpy(dtype=ndt, na_value=_zero(ndt))))
            t.add(f"{base}/{enc}.mask.npy", npy_bytes(np.asarray(pd.isna(arr), dtype=bool)))
        elif kind == "cat":
            codes = s.cat.codes.to_numpy()
            sdt = _stored_codes_dtype(h5, h5paths, col) if h5 is not None else None
            if sdt is not None:
                codes = codes.astype(sdt)
            t.add(f"{base}/{enc}.codes.npy", npy_bytes(codes))
            t.add(f"{base}/{enc}.categories.txt", lines(fmt_scalar(c) for c in s.cat.categories.values))


def dataframe_tsv(df) -> bytes:
    name = df.index.name
    header = [fmt_scalar(name) if name is not None else ""] + [fmt_scalar(str(c)) for c in df.columns]
    head = "\t".join(header)
    if head == "":
        head = '""'
    cols = [column_text_values(df[c]) for c in df.columns]
    idx = [fmt_scalar(v) for v in df.index.values]
    rows = [head] + ["\t".join([idx[i]] + [c[i] for c in cols]) for i in range(len(idx))]
    return lines(rows)


def matrix_dir(t: _Tree, base: str, x, h5=None, h5paths=(), var_columns=False):
    """dense.npy (+ csr/ or csc/ stored arrays for sparse matrices; for matrices whose columns are vars, the
    transposed arrays too: scipy's tocsc() of a stored CSR, tocsr() of a stored CSC)."""
    import scipy.sparse as sp
    t.mkdir(base)
    if var_columns:  # cols/ and genes/ list only their README.txt
        t.mkdir(f"{base}/cols")
        t.mkdir(f"{base}/genes")
    if _is_sparse(x):
        stored = _stored_sparse(h5, h5paths) if h5 is not None else None
        if stored is None:
            fmt = x.format
            data, indices, indptr = x.data, x.indices, x.indptr
        else:
            fmt, data, indices, indptr = stored
        t.add(f"{base}/{fmt}/data.npy", npy_bytes(data))
        t.add(f"{base}/{fmt}/indices.npy", npy_bytes(indices))
        t.add(f"{base}/{fmt}/indptr.npy", npy_bytes(indptr))
        if var_columns:
            cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
            m = cls((data, indices, indptr), shape=x.shape)
            tr, name = (m.tocsc(), "csc") if fmt == "csr" else (m.tocsr(), "csr")
            for k in ("data", "indices", "indptr"):
                t.add(f"{base}/{name}/{k}.npy", npy_bytes(getattr(tr, k)))
        dense = x.toarray()
    else:
        dense = np.asarray(x)
    t.add(f"{base}/dense.npy", npy_bytes(dense))


def mapping_entries(t: _Tree, base: str, mapping, h5, h5base_paths, obs_like: bool = True):
    """obsm/varm-style mapping: dense 2-D -> .npy + .tsv, dataframe -> dir, sparse -> matrix dir."""
    import pandas as pd
    t.mkdir(base)
    for key in mapping.keys():
        v = mapping[key]
        paths = [f"{p}/{key}" for p in h5base_paths]
        if isinstance(v, pd.DataFrame):
            dataframe_dir(t, f"{base}/{key}", v, h5, paths)
        elif _is_sparse(v):
            matrix_dir(t, f"{base}/{key}", v, h5, paths)
        else:
            arr = np.asarray(v)
            if arr.dtype.kind not in "iufcb":
                continue  # not rendered (e.g. awkward / string arrays in obsm)
            t.add(f"{base}/{key}.npy", npy_bytes(arr))
            t.add(f"{base}/{key}.tsv", lines(array_text_rows(arr if arr.ndim >= 2 else arr.reshape(-1, 1))))


def uns_entries(t: _Tree, base: str, d, h5, h5path: str):
    import pandas as pd
    t.mkdir(base)
    for key, v in d.items():
        p = f"{base}/{key}"
        hp = f"{h5path}/{key}"
        if v is None:
            continue
        if isinstance(v, dict):
            uns_entries(t, p, v, h5, hp)
        elif isinstance(v, pd.DataFrame):
            dataframe_dir(t, p, v, h5, [hp])
        elif _is_sparse(v):
            matrix_dir(t, p, v, h5, [hp])
        elif isinstance(v, (str, bytes, bool, int, float, complex, np.generic)):
            # anndata returns numeric scalars as Python int/float: the stored dtype decides the float text
            if isinstance(v, float) and not isinstance(v, np.floating):
                node = _h5get(h5, hp)
                dt = getattr(node, "dtype", None)
                if dt is not None and dt.kind == "f":
                    v = dt.type(v)
            t.add(f"{p}.txt", lines([fmt_scalar(v)]))
        elif isinstance(v, (list, tuple)):
            arr = np.asarray(v)
            _uns_array(t, p, arr)
        elif isinstance(v, np.ndarray):
            _uns_array(t, p, v)
        else:
            # awkward arrays, nullable arrays in uns, ...: not rendered (README lists them)
            continue


def _uns_array(t: _Tree, p: str, arr: np.ndarray):
    if arr.dtype.names:
        t.add(f"{p}.tsv", recarray_tsv(arr))
    elif arr.dtype.kind in "USO":
        t.add(f"{p}.txt", lines(string_array_lines(arr)))
    elif arr.dtype.kind in "iufcb":
        t.add(f"{p}.npy", npy_bytes(arr))
        t.add(f"{p}.txt", lines(array_text_rows(arr)))


def recarray_tsv(arr: np.ndarray) -> bytes:
    names = arr.dtype.names
    header = []
    getters = []
    for nm in names:
        fdt = arr.dtype.fields[nm][0]
        if fdt.shape:
            n = int(np.prod(fdt.shape))
            for i in range(n):
                header.append(fmt_scalar(f"{nm}[{i}]"))
                getters.append((nm, i))
        else:
            header.append(fmt_scalar(str(nm)))
            getters.append((nm, None))
    rows = ["\t".join(header)]
    for rec in arr:
        cells = []
        for nm, i in getters:
            v = rec[nm]
            if i is not None:
                v = np.asarray(v).ravel()[i]
            cells.append("NA" if v is None else fmt_scalar(v))
        rows.append("\t".join(cells))
    return lines(rows)


# --------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------

_CACHE: dict = {}


def read(store):
    import anndata as ad
    return ad.read_h5ad(store)


def build(store) -> _Tree:
    import h5py
    store = Path(store)
    key = (str(store.resolve()), store.stat().st_mtime_ns, store.stat().st_size)
    if key in _CACHE:
        return _CACHE[key]
    adata = read(store)
    t = _Tree()
    for d in ALWAYS_DIRS:
        t.mkdir(d)
    with h5py.File(store, "r") as h5:
        t.add("obs.tsv", dataframe_tsv(adata.obs))
        t.add("var.tsv", dataframe_tsv(adata.var))
        dataframe_dir(t, "obs", adata.obs, h5, ["obs"])
        dataframe_dir(t, "var", adata.var, h5, ["var"])
        if adata.X is not None:
            matrix_dir(t, "X", adata.X, h5, ["X"], var_columns=True)
        for k in adata.layers.keys():
            matrix_dir(t, f"layers/{k}", adata.layers[k], h5, [f"layers/{k}"], var_columns=True)
        mapping_entries(t, "obsm", adata.obsm, h5, ["obsm"])
        mapping_entries(t, "varm", adata.varm, h5, ["varm"])
        for k in adata.obsp.keys():
            # legacy files: anndata moves uns/neighbors/{connectivities,distances} to obsp
            matrix_dir(t, f"obsp/{k}", adata.obsp[k], h5, [f"obsp/{k}", f"uns/neighbors/{k}"])
        for k in adata.varp.keys():
            matrix_dir(t, f"varp/{k}", adata.varp[k], h5, [f"varp/{k}"])
        if adata.raw is not None:
            raw = adata.raw
            matrix_dir(t, "raw/X", raw.X, h5, ["raw/X", "raw.X"], var_columns=True)
            dataframe_dir(t, "raw/var", raw.var, h5, ["raw/var", "raw.var"])
            t.add("raw/var.tsv", dataframe_tsv(raw.var))
            mapping_entries(t, "raw/varm", raw.varm, h5, ["raw/varm", "raw.varm"])
        uns_entries(t, "uns", adata.uns, h5, "uns")
    _CACHE.clear()
    _CACHE[key] = t
    return t


def expected_tree(store) -> dict[str, bytes]:
    return dict(build(store).files)


def expected_dirs(store) -> set[str]:
    return set(build(store).dirs)


# Extras that the daemon must also show, not described byte-for-byte by the oracle: README/.annfs, rows/,
# 10x dirs, matrix.mtx (test_rows.py), cols/ and genes/ and the transposed sparse arrays of a matrix (csc/ of
# a CSR matrix, csr/ of a CSC one: test_cols.py checks them against scipy).
def is_allowed_extra(path: str) -> bool:
    parts = path.split("/")
    if path == "README.txt" or parts[0] in (".annfs", "rows", "where"):
        return True
    if len(parts) >= 2 and parts[-2] in ("cols", "genes") and parts[-1] == "README.txt":
        return True
    return ("rows" in parts[:-1] or "where" in parts[:-1] or "10x" in parts[:-1] or "10x_v3" in parts[:-1]
            or parts[-1] == "matrix.mtx")


if __name__ == "__main__":  # pragma: no cover - debugging aid
    import sys
    tr = expected_tree(sys.argv[1])
    for k in sorted(tr):
        print(f"{len(tr[k]):9d}  {k}")
