"""Independent Python rendering of issue 4's views (docs/TREE.md: matrix.mtx, rows/, 10x/, rows/S:E/).

    matrix_dirs(store)          -> [MatrixDir]: every matrix directory of the base tree, with the matrix anndata
                                   holds and the arrays as stored (h5py) for sparse ones
    Entries(md)                 -> the MatrixMarket entries of a matrix in the order annfs prints them
    Entries.mtx(rows=, transpose=) -> exact bytes of matrix.mtx / rows/S:E.mtx / 10x/matrix.mtx
    rows_tsv(dense, a, b)       -> exact bytes of rows/S:E.tsv
    genes_tsv(var), barcodes_tsv(obs) -> exact bytes of 10x/genes.tsv, 10x/barcodes.tsv
    subset_expected(store, sel, tmp, mds) -> exact bytes of every oracle file of a subset view (rows/S:E/ for a
                                   slice, where/<col>=<value>/ for an array of row positions)
    py_slice(name, n)           -> (start, end) of a slice name, or None (the contract's validity rules, written
                                   from docs/TREE.md, not from the Rust parser)

Readings of the contract used here (docs/TREE.md + the issue brief):
  * entry order: CSR and dense row by row, CSC column by column, each line in stored order (so a CSC matrix's
    rows/S:E.mtx lists column by column the stored entries whose row is in [S, E));
  * sparse: every stored entry (explicit zeros, duplicates), dense: entries `!= 0` (NaN is nonzero, -0.0 is zero);
  * `10x/matrix.mtx`: the same entries in the same order, `col row value`, size line `n_vars n_obs nnz`;
  * field: `integer` for int/uint/bool (bool as 0/1), `real` for floats, `complex` for complex (`re im`).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import oracle


@dataclass
class MatrixDir:
    rel: str                    # virtual path of the matrix directory ("X", "layers/counts", "obsp/distances", ...)
    x: object                   # the matrix anndata holds (ndarray or scipy sparse)
    stored: tuple | None        # (fmt, data, indices, indptr) exactly as stored, for sparse matrices
    obs_var: bool               # has 10x/ (X, layers, raw/X)
    var: object = None          # the var dataframe of its columns (10x/genes.tsv)
    obs: object = None
    kind: str = ""              # "X", "layer", "raw", "obsp", "varp", "obsm", "varm", "uns"

    @property
    def dense(self) -> np.ndarray:
        import scipy.sparse as sp
        return self.x.toarray() if sp.issparse(self.x) else np.asarray(self.x)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.x.dtype)

    @property
    def fmt(self) -> str:
        return self.stored[0] if self.stored is not None else "dense"


def matrix_dirs(store) -> list[MatrixDir]:
    import anndata as ad
    import h5py
    import scipy.sparse as sp

    adata = ad.read_h5ad(store)
    out: list[MatrixDir] = []
    with h5py.File(store, "r") as h5:
        def add(rel, x, paths, obs_var=False, var=None, kind=""):
            if x is None:
                return
            stored = None
            if sp.issparse(x):
                stored = oracle._stored_sparse(h5, paths)
                if stored is None:
                    stored = (x.format, x.data, x.indices, x.indptr)
            elif np.asarray(x).ndim != 2 or np.asarray(x).dtype.kind not in "iufcb":
                return
            out.append(MatrixDir(rel, x, stored, obs_var, var, adata.obs, kind))

        add("X", adata.X, ["X"], True, adata.var, "X")
        for k in adata.layers.keys():
            add(f"layers/{k}", adata.layers[k], [f"layers/{k}"], True, adata.var, "layer")
        if adata.raw is not None:
            add("raw/X", adata.raw.X, ["raw/X", "raw.X"], True, adata.raw.var, "raw")
        for k in adata.obsp.keys():
            add(f"obsp/{k}", adata.obsp[k], [f"obsp/{k}", f"uns/neighbors/{k}"], kind="obsp")
        for k in adata.varp.keys():
            add(f"varp/{k}", adata.varp[k], [f"varp/{k}"], kind="varp")
        for name in ("obsm", "varm"):
            m = getattr(adata, name)
            for k in m.keys():
                if sp.issparse(m[k]):
                    add(f"{name}/{k}", m[k], [f"{name}/{k}"], kind=name)

        def uns(d, base, hbase):
            for k, v in d.items():
                if isinstance(v, dict):
                    uns(v, f"{base}/{k}", f"{hbase}/{k}")
                elif sp.issparse(v):
                    add(f"{base}/{k}", v, [f"{hbase}/{k}"], kind="uns")
        uns(adata.uns, "uns", "uns")
    return out


# --------------------------------------------------------------------------------------------------------------
# MatrixMarket
# --------------------------------------------------------------------------------------------------------------

def mtx_field(dt) -> str:
    dt = np.dtype(dt)
    return {"f": "real", "c": "complex"}.get(dt.kind, "integer")


def value_text(v, dt) -> str:
    dt = np.dtype(dt)
    if dt.kind == "b":
        return "1" if v else "0"
    if dt.kind in "iu":
        return str(int(v))
    if dt.kind == "f":
        return oracle._float_text(v, dt)
    if dt.kind == "c":
        part = np.float32 if dt == np.complex64 else np.float64
        return oracle._float_text(v.real, part) + " " + oracle._float_text(v.imag, part)
    raise TypeError(dt)


class Entries:
    """The entries of one matrix in print order: rows, cols (0-based), value texts."""

    def __init__(self, md: MatrixDir):
        self.shape = md.shape
        self.dtype = md.dtype
        if md.stored is not None:
            fmt, data, indices, indptr = md.stored
            indptr = np.asarray(indptr, dtype=np.int64)
            lo, hi = int(indptr[0]), int(indptr[-1])
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            minor = np.asarray(indices, dtype=np.int64)[lo:hi]
            data = np.asarray(data)[lo:hi]
            self.r, self.c = (major, minor) if fmt == "csr" else (minor, major)
            vals = data
        else:
            d = md.dense
            mask = d != 0
            self.r, self.c = np.nonzero(mask)
            vals = d[mask]
        self.r = np.asarray(self.r, dtype=np.int64)
        self.c = np.asarray(self.c, dtype=np.int64)
        self.vals = vals
        self.texts = np.array([value_text(v, self.dtype) for v in vals.tolist()] if self.dtype.kind not in "fc"
                              else [value_text(v, self.dtype) for v in vals], dtype=object)

    def mtx(self, rows: tuple[int, int] | None = None, transpose: bool = False, square: bool = False) -> bytes:
        """`rows`: restrict to rows [a, b) (numbered from a); `square`: the columns too (obsp in a subset view)."""
        r, c, t = self.r, self.c, self.texts
        nr, nc = self.shape
        if rows is not None:
            a, b = rows
            keep = (r >= a) & (r < b)
            if square:
                keep &= (c >= a) & (c < b)
                c = c - a
                nc = b - a
            r, c, t = r[keep] - a, c[keep], t[keep]
            nr = b - a
        if transpose:
            r, c, nr, nc = c, r, nc, nr
        head = f"%%MatrixMarket matrix coordinate {mtx_field(self.dtype)} general\n{nr} {nc} {len(t)}\n"
        body = "".join(f"{i + 1} {j + 1} {s}\n" for i, j, s in zip(r.tolist(), c.tolist(), t))
        return (head + body).encode()


def rows_tsv(dense: np.ndarray, a: int, b: int) -> bytes:
    return oracle.lines(oracle.array_text_rows(dense[a:b]))


def genes_tsv(var) -> bytes:
    names = [oracle.fmt_scalar(v) for v in var.index.values]
    if "gene_ids" in var.columns:
        ids = oracle.column_text_values(var["gene_ids"])
    else:
        ids = names
    return oracle.lines(f"{i}\t{n}" for i, n in zip(ids, names))


def barcodes_tsv(obs) -> bytes:
    return oracle.lines(oracle.fmt_scalar(v) for v in obs.index.values)


# --------------------------------------------------------------------------------------------------------------
# Slice names, from docs/TREE.md
# --------------------------------------------------------------------------------------------------------------

_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")


def _bound(s: str, n: int) -> int | None:
    if not _INT.match(s):
        return None
    v = int(s)
    return v + n if v < 0 else v


def py_slice(name: str, n: int) -> tuple[int, int] | None:
    parts = name.split(":")
    if len(parts) != 2:
        return None
    a = 0 if parts[0] == "" else _bound(parts[0], n)
    b = n if parts[1] == "" else _bound(parts[1], n)
    if a is None or b is None or not (0 <= a < b <= n):
        return None
    return a, b


def py_index(name: str, n: int) -> int | None:
    i = _bound(name, n)
    return i if i is not None and 0 <= i < n else None


def parse_mtx_header(data: bytes) -> tuple[str, int, int, int]:
    lines = data.split(b"\n", 2)
    m = re.match(rb"%%MatrixMarket matrix coordinate (real|integer|complex|pattern) general$", lines[0])
    assert m, f"bad banner {lines[0]!r}"
    r, c, nnz = map(int, lines[1].split())
    return m.group(1).decode(), r, c, nnz


UNCHANGED = ("var.tsv", "var/", "varm/", "varp/", "uns/", "raw/var.tsv", "raw/var/", "raw/varm/")


def subset_expected(store, sel, tmp: Path, mds: list[MatrixDir]) -> dict[str, bytes]:
    """Expected bytes of every oracle file of the subset view of rows `sel` (a slice, or sorted row positions):
    restricted parts from oracle.expected_tree(adata[sel].copy() written to h5ad); var/varm/varp/uns from the
    base tree; categorical obs columns keep all categories (codes = stored codes[sel]); sparse arrays of CSR
    matrices restricted by rows = scipy's row selection of the stored arrays (stored dtypes, indptr from 0);
    minor-filtered sparse matrices (CSC, obsp) have no csr/ or csc/.  `mds` = matrix_dirs(store)."""
    import anndata as ad
    full = ad.read_h5ad(store)
    idx = np.arange(full.n_obs)[sel]
    sub = full[idx].copy()
    p = tmp / f"sub_{abs(hash(idx.tobytes()))}.h5ad"
    try:  # keep nullable string columns as they are (they are written as strings, not categoricals)
        ad.settings.allow_write_nullable_strings = True
    except AttributeError:
        pass
    sub.write_h5ad(p, convert_strings_to_categoricals=False)
    want = oracle.expected_tree(p)
    base = oracle.expected_tree(store)
    out = {k: v for k, v in want.items() if not k.startswith(UNCHANGED)}
    out.update({k: v for k, v in base.items() if k.startswith(UNCHANGED)})
    for k, v in base.items():  # categorical columns of obs and obsm dataframes: all categories kept
        if k.startswith(("obs/", "obsm/")) and k.endswith(".categories.txt"):
            out[k] = v
        if k.startswith(("obs/", "obsm/")) and k.endswith(".codes.npy"):
            out[k] = oracle.npy_bytes(np.load(io.BytesIO(v))[idx])
    for md in mds:
        if md.kind not in ("X", "layer", "raw", "obsm", "obsp"):
            continue
        for f in ("data", "indices", "indptr"):
            for fmt in ("csr", "csc"):
                out.pop(f"{md.rel}/{fmt}/{f}.npy", None)
        if md.stored is not None and md.fmt == "csr" and md.kind != "obsp":
            _, data, indices, indptr = md.stored
            take = np.concatenate([np.arange(indptr[r], indptr[r + 1]) for r in idx] + [np.zeros(0, np.int64)])
            lengths = np.diff(indptr)[idx]
            out[f"{md.rel}/csr/data.npy"] = oracle.npy_bytes(data[take.astype(np.int64)])
            out[f"{md.rel}/csr/indices.npy"] = oracle.npy_bytes(indices[take.astype(np.int64)])
            out[f"{md.rel}/csr/indptr.npy"] = oracle.npy_bytes(
                np.concatenate([[0], np.cumsum(lengths)]).astype(indptr.dtype))
    return out
