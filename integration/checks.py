"""Helpers shared by the oracle self-tests and the mount tests: parse text files back and compare them (and .npy
files) with what anndata holds."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pandas as pd

import oracle


def parse_table(data: bytes) -> list[list[str]]:
    """Tab-separated, `"`-quoted text (every annfs text file) -> rows of fields. An empty line is one empty field."""
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n"), "text files end with a newline"
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"', doublequote=True,
                           strict=True))
    return [r if r else [""] for r in rows]


def parse_lines(data: bytes) -> list[str]:
    rows = parse_table(data)
    for r in rows:
        assert len(r) == 1, f"one value per line expected, got {r!r}"
    return [r[0] for r in rows]


def _isna(x) -> bool:
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


class _Missing:
    def __repr__(self):
        return "<missing>"


MISSING = _Missing()


def cell_matches(read, orig) -> bool:
    """Does a value read back (by pandas, or a string from a text file) match the value anndata holds?
    `orig` is MISSING (or None/pd.NA) for a missing value (text `NA`); a float NaN is a value (text `NaN`)."""
    if isinstance(orig, (float, np.floating)) and math.isnan(float(orig)):
        return _isna(read) or read == "NaN"
    if orig is MISSING or orig is None or orig is pd.NA:
        return _isna(read) or read == "NA"
    if isinstance(orig, (bytes, np.bytes_)):
        orig = bytes(orig).rstrip(b"\0").decode("utf-8", "replace")
    if isinstance(orig, str):
        if orig == "" and (_isna(read) or read == ""):
            return True  # pandas reads an empty field as missing (documented in docs/FORMATS.md)
        if isinstance(read, str):
            return read == orig
        if _isna(read):
            return orig in ("NA", "NaN", "nan", "")
        try:
            return float(read) == float(orig)
        except ValueError:
            return str(read) == orig
    if isinstance(orig, (bool, np.bool_)):
        if isinstance(read, str):
            return read == ("True" if orig else "False")
        return bool(read) == bool(orig) and not _isna(read)
    if isinstance(orig, (np.integer, int)):
        if isinstance(read, str):
            return read == str(int(orig))
        if isinstance(read, (float, np.floating)):
            return float(read) == float(orig)
        return int(read) == int(orig)
    if isinstance(orig, (np.floating, float)):
        dt = orig.dtype if isinstance(orig, np.floating) else np.dtype(np.float64)
        if isinstance(read, str):
            r = {"NaN": math.nan, "inf": math.inf, "-inf": -math.inf}.get(read)
            r = float(read) if r is None else r
        else:
            if _isna(read):
                return math.isnan(float(orig))
            r = float(read)
        rv = dt.type(r)
        ov = dt.type(orig)
        if math.isnan(float(ov)):
            return math.isnan(float(rv))
        if rv == ov and np.signbit(rv) == np.signbit(ov):
            return True
        # anndata returns stored float32 scalars as Python floats: the text is float32's shortest form
        if not isinstance(orig, np.floating) and float(np.float32(orig)) == float(orig):
            return np.float32(r) == np.float32(orig)
        return False
    if isinstance(orig, (complex, np.complexfloating)):
        return complex(read.replace("NaN", "nan")) == complex(orig) if isinstance(read, str) else read == orig
    return str(read) == str(orig)


def assert_series_matches(read_values, orig: pd.Series, what: str):
    read_values = list(read_values)
    assert len(read_values) == len(orig), f"{what}: {len(read_values)} values, anndata has {len(orig)}"
    if isinstance(orig.dtype, np.dtype) and orig.dtype.kind in "iufcb":
        ov = list(orig.to_numpy())  # keep numpy scalar types (float32!)
    else:
        # categoricals, nullable arrays, strings: a missing slot is MISSING (text `NA`)
        mask = np.asarray(pd.isna(orig))
        vals = orig.astype(object).to_numpy() if isinstance(orig.dtype, pd.CategoricalDtype) else list(orig.array)
        ov = [MISSING if m else v for v, m in zip(vals, mask)]
    bad = [(i, r, o) for i, (r, o) in enumerate(zip(read_values, ov)) if not cell_matches(r, o)]
    assert not bad, f"{what}: {len(bad)} mismatches, first {bad[:3]}"


def assert_tsv_matches_df(data: bytes, df: pd.DataFrame, what: str):
    """pandas.read_csv(sep='\\t', index_col=0, float_precision='round_trip') reads back what anndata holds."""
    back = pd.read_csv(io.BytesIO(data), sep="\t", index_col=0, float_precision="round_trip")
    assert [str(c) for c in back.columns] == [str(c) for c in df.columns], f"{what}: columns differ"
    assert len(back) == len(df), f"{what}: {len(back)} rows, anndata has {len(df)}"
    assert_series_matches(list(back.index), pd.Series(df.index.to_numpy(dtype=object)), f"{what} index")
    for i, c in enumerate(df.columns):
        assert_series_matches(back.iloc[:, i].tolist(), df[c], f"{what} column {c!r}")
    name = df.index.name
    assert (back.index.name or None) == (None if name in (None, "") else str(name)) or \
        (name is None and back.index.name is None), f"{what}: index name {back.index.name!r} != {name!r}"


def anndata_arrays(adata) -> dict[str, np.ndarray]:
    """Virtual .npy path -> the array anndata holds (value and dtype must match the .npy file)."""
    import scipy.sparse as sp

    out: dict[str, np.ndarray] = {}

    def mat(base, x):
        out[f"{base}/dense.npy"] = x.toarray() if sp.issparse(x) else np.asarray(x)
        if sp.issparse(x):
            out[f"{base}/{x.format}/data.npy"] = x.data

    def frame(base, df):
        for c in df.columns:
            s = df[c]
            kind = oracle._col_kind(s)
            enc = oracle.encode_col(c)
            if kind == "numeric":
                out[f"{base}/{enc}.npy"] = s.to_numpy()
            elif kind == "nullable":
                out[f"{base}/{enc}.mask.npy"] = np.asarray(pd.isna(s.array), dtype=bool)
            elif kind == "cat":
                out[f"{base}/{enc}.codes.npy"] = s.cat.codes.to_numpy()

    def mapping(base, m):
        for k in m.keys():
            v = m[k]
            if isinstance(v, pd.DataFrame):
                frame(f"{base}/{k}", v)
            elif sp.issparse(v):
                mat(f"{base}/{k}", v)
            elif np.asarray(v).dtype.kind in "iufcb":
                out[f"{base}/{k}.npy"] = np.asarray(v)

    if adata.X is not None:
        mat("X", adata.X)
    for k in adata.layers.keys():
        mat(f"layers/{k}", adata.layers[k])
    frame("obs", adata.obs)
    frame("var", adata.var)
    mapping("obsm", adata.obsm)
    mapping("varm", adata.varm)
    for k in adata.obsp.keys():
        mat(f"obsp/{k}", adata.obsp[k])
    for k in adata.varp.keys():
        mat(f"varp/{k}", adata.varp[k])
    if adata.raw is not None:
        mat("raw/X", adata.raw.X)
        frame("raw/var", adata.raw.var)
        mapping("raw/varm", adata.raw.varm)
    return out


def assert_npy_equal(loaded: np.ndarray, want: np.ndarray, what: str, exact_dtype: bool = True):
    want = np.asarray(want)
    if exact_dtype:
        assert loaded.dtype.newbyteorder("=") == want.dtype.newbyteorder("="), \
            f"{what}: dtype {loaded.dtype} != {want.dtype}"
    else:  # codes: stored dtype may be wider/narrower than pandas' choice
        assert loaded.dtype.kind == want.dtype.kind, f"{what}: dtype kind {loaded.dtype} vs {want.dtype}"
    assert loaded.shape == want.shape, f"{what}: shape {loaded.shape} != {want.shape}"
    if want.dtype.kind in "fc":
        assert np.array_equal(np.asarray(loaded), want, equal_nan=True), f"{what}: values differ"
        assert np.array_equal(np.signbit(np.asarray(loaded).real), np.signbit(want.real)), f"{what}: signs differ"
    else:
        assert np.array_equal(np.asarray(loaded), want), f"{what}: values differ"
