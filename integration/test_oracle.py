"""Self-tests of the oracle, independent of the daemon: everything it produces parses back to what anndata holds."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

import checks
import oracle
from conftest import COMMITTED, store_path


@pytest.fixture(scope="module")
def cache():
    return {}


def _load(store_id, cache):
    if store_id not in cache:
        import anndata as ad
        p = store_path(store_id)
        cache[store_id] = (ad.read_h5ad(p), oracle.expected_tree(p), oracle.expected_dirs(p))
    return cache[store_id]


def _frames(adata):
    out = {"obs": adata.obs, "var": adata.var}
    for m, name in ((adata.obsm, "obsm"), (adata.varm, "varm")):
        for k in m.keys():
            if isinstance(m[k], pd.DataFrame):
                out[f"{name}/{k}"] = m[k]
    if adata.raw is not None:
        out["raw/var"] = adata.raw.var

    def uns(d, base):
        for k, v in d.items():
            if isinstance(v, dict):
                uns(v, f"{base}/{k}")
            elif isinstance(v, pd.DataFrame):
                out[f"{base}/{k}"] = v
    uns(adata.uns, "uns")
    return out


def test_npy_parse_back(store_id, cache):
    adata, tree, _ = _load(store_id, cache)
    want = checks.anndata_arrays(adata)
    npys = [p for p in tree if p.endswith(".npy")]
    for p in npys:
        arr = np.load(io.BytesIO(tree[p]), allow_pickle=False)
        assert arr.dtype.byteorder in "=|<", p
        if p in want:
            checks.assert_npy_equal(arr, want[p], p, exact_dtype=not p.endswith(".codes.npy"))
    missing = set(want) - set(tree)
    assert not missing, f"oracle lacks {sorted(missing)[:5]}"


def test_npy_header_layout(store_id, cache):
    _, tree, _ = _load(store_id, cache)
    for p, b in tree.items():
        if p.endswith(".npy"):
            assert b[:8] == b"\x93NUMPY\x01\x00", p
            hlen = int.from_bytes(b[8:10], "little")
            assert (10 + hlen) % 64 == 0 and b[10 + hlen - 1:10 + hlen] == b"\n", p


def test_dataframe_tsv_parse_back(store_id, cache):
    adata, tree, _ = _load(store_id, cache)
    checks.assert_tsv_matches_df(tree["obs.tsv"], adata.obs, "obs.tsv")
    checks.assert_tsv_matches_df(tree["var.tsv"], adata.var, "var.tsv")
    if adata.raw is not None:
        checks.assert_tsv_matches_df(tree["raw/var.tsv"], adata.raw.var, "raw/var.tsv")


def test_dataframe_dirs_parse_back(store_id, cache):
    adata, tree, _ = _load(store_id, cache)
    for base, df in _frames(adata).items():
        idx = checks.parse_lines(tree[f"{base}/index.txt"])
        assert idx == [str(x) for x in df.index], base
        for c in df.columns:
            enc = oracle.encode_col(c)
            vals = checks.parse_lines(tree[f"{base}/{enc}.txt"])
            checks.assert_series_matches(vals, df[c], f"{base}/{enc}.txt")
            if isinstance(df[c].dtype, pd.CategoricalDtype):
                cats = checks.parse_lines(tree[f"{base}/{enc}.categories.txt"])
                checks.assert_series_matches(cats, pd.Series(df[c].cat.categories.to_numpy()), base + c)
                codes = np.load(io.BytesIO(tree[f"{base}/{enc}.codes.npy"]))
                assert np.array_equal(codes, df[c].cat.codes.to_numpy())
                assert codes.dtype.kind == "i"


def test_tsv_shapes(store_id, cache):
    adata, tree, _ = _load(store_id, cache)
    for p, b in tree.items():
        if p.endswith(".tsv") and p.startswith(("obsm/", "varm/", "raw/varm/")):
            rows = checks.parse_table(b)
            arr = np.load(io.BytesIO(tree[p[:-4] + ".npy"]))
            assert len(rows) == arr.shape[0]
            width = int(np.prod(arr.shape[1:]))
            for r in rows:
                assert len(r) == width, p
            flat = arr.reshape(arr.shape[0], -1)
            for i, r in enumerate(rows):
                for cell, v in zip(r, flat[i]):
                    assert checks.cell_matches(cell, v), (p, i, cell, v)


def _walk_uns(d, base):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _walk_uns(v, f"{base}/{k}")
        else:
            yield f"{base}/{k}", v


def test_uns_parse_back(store_id, cache):
    adata, tree, dirs = _load(store_id, cache)
    import scipy.sparse as sp
    for p, v in _walk_uns(adata.uns, "uns"):
        if v is None:
            assert not any(k == p or k.startswith(p + ".") or k.startswith(p + "/") for k in tree), p
        elif isinstance(v, pd.DataFrame):
            assert p in dirs
        elif sp.issparse(v):
            assert f"{p}/dense.npy" in tree
        elif isinstance(v, np.ndarray) and v.dtype.names:
            rows = checks.parse_table(tree[f"{p}.tsv"])
            assert len(rows) == len(v) + 1
            for i, rec in enumerate(v):
                flat = []
                for nm in v.dtype.names:
                    x = rec[nm]
                    flat.extend(np.asarray(x).ravel().tolist() if np.ndim(x) else [x])
                for cell, x in zip(rows[i + 1], flat):
                    assert checks.cell_matches(cell, x), (p, i, cell, x)
        elif isinstance(v, np.ndarray) and v.dtype.kind in "USO":
            vals = checks.parse_lines(tree[f"{p}.txt"])
            assert vals == [str(x) for x in v.ravel()], p
        elif isinstance(v, np.ndarray):
            arr = np.load(io.BytesIO(tree[f"{p}.npy"]))
            assert arr.dtype == v.dtype and np.array_equal(arr, v, equal_nan=v.dtype.kind in "fc"), p
            rows = checks.parse_table(tree[f"{p}.txt"])
            flat = v.reshape(v.shape[0], -1) if v.ndim >= 2 else v.reshape(-1, 1)
            assert len(rows) == (1 if v.ndim == 0 else flat.shape[0]), p
            for i, r in enumerate(rows):
                for cell, x in zip(r, np.atleast_1d(flat[i])):
                    assert checks.cell_matches(cell, x), (p, cell, x)
        else:
            (val,) = checks.parse_lines(tree[f"{p}.txt"])
            assert checks.cell_matches(val, v), (p, val, v)


def test_column_name_encoding():
    e = oracle.encode_col
    assert e("a/b ratio") == "a%2Fb ratio"
    assert e("100%") == "100%25"
    assert e(".hidden") == "%2Ehidden"
    assert e("index") == "inde%78"
    assert e("leiden.codes") == "leiden.code%73"
    assert e("x.mask") == "x.mas%6B"
    assert e("y.categories") == "y.categorie%73"
    assert e("a\0b") == "a%00b"
    assert e("plain") == "plain"


def test_value_formatting():
    f = oracle.fmt_scalar
    assert f(np.float64(0.1)) == "0.1"
    assert f(np.float32(0.1)) == "0.1"
    assert f(np.float64(np.nan)) == "NaN" and f(np.float32(-np.inf)) == "-inf"
    assert f(-0.0) == "-0.0" and f(3.0) == "3.0" and f(1e-5) == "1e-05" and f(1.5e16) == "1.5e+16"
    assert f(np.float32(1e20)) == "1e+20" and f(np.float32(1e-4)) == "1e-04" and f(np.float32(1e6)) == "1e+06"
    assert f(np.float16(1000)) == "1e+03" and f(np.float16(999)) == "999.0"
    assert f(np.uint64(2**64 - 1)) == "18446744073709551615"
    assert f(np.bool_(True)) == "True" and f(False) == "False"
    assert f(np.complex128(1 + 2.5j)) == "1.0+2.5j" and f(np.complex128(-0.5 - 1j)) == "-0.5-1.0j"
    assert f('a"b') == '"a""b"' and f("a\tb") == '"a\tb"' and f("a\rb") == '"a\rb"' and f("") == ""
    assert f(b"abc\0\0") == "abc"


def test_literal_expectations():
    """Byte-exact spot checks on the committed fixtures (catches silent oracle regressions)."""
    t = oracle.expected_tree(store_path("dense_f32"))
    f32 = t["obs/float32.txt"].decode().split("\n")
    assert f32[:13] == ["NaN", "inf", "-inf", "-0.0", "1e-07", "1e+20", "0.1", "3.0", "1e-45", "3.4028235e+38",
                        "1e-04", "1e+16", "123.456"]
    assert t["obs.tsv"].startswith(b"\tint8\tint16\t")
    assert t["var.tsv"].startswith(b"gene_symbol\tgene_ids\t")
    assert t["uns/str_scalar.txt"] == b'"with ""quote""\tand tab"\n'
    assert t["uns/f32_scalar.txt"] == b"1e+20\n"
    assert t["uns/rec.tsv"] == b'id\tvalue\tname\n0\t0.5\ta\n1\tNaN\t"b\tc"\n2\t1e-07\t\xc3\xa9\n3\t-2.0\t\n'
    assert t["obs/nullable_int.txt"].startswith(b"1\nNA\n-3\n2147483647\nNA\n0\n")
    assert "uns/nothing.txt" not in t and not any(k.startswith("uns/nothing") for k in t)
    assert t["uns/params/nested/deep/x.txt"] == b"0.1\n"
    assert "uns/params/nested/deep/empty" in oracle.expected_dirs(store_path("dense_f32"))
    e = oracle.expected_tree(store_path("empty_obs_no_x"))
    assert e["obs.tsv"].split(b"\n")[0] == b'""'
    assert not any(k.startswith("X/") for k in e)
    u = oracle.expected_tree(store_path("uns_edge"))
    assert u["uns/complex.txt"] == b"1.0+2.5j\n-0.5-1.0j\n0.0+0.0j\n"
    assert u["uns/cube.txt"].split(b"\n")[0] == b"\t".join(str(i).encode() for i in range(12))
    assert u["uns/empty_f.txt"] == b""
    assert u["uns/zero_d.txt"] == b"3.25\n"


def test_legacy_reading():
    """Legacy layout: uns/<col>_categories become categoricals, uns/neighbors graphs appear under obsp/."""
    t = oracle.expected_tree(store_path("real_pbmc68k_reduced_legacy"))
    assert "obs/louvain.codes.npy" in t and "obs/louvain.categories.txt" in t
    assert not any(k.startswith("uns/louvain_categories") for k in t)
    assert "obsp/connectivities/csr/data.npy" in t and "obsp/distances/dense.npy" in t
    assert not any(k.startswith("uns/neighbors/connectivities") for k in t)
    assert t["obs.tsv"].startswith(b"index\tbulk_labels\t")


def test_fixtures_small():
    for p in COMMITTED:
        limit = 3 * 1024 * 1024 if p.name.startswith("real_") else 300 * 1024
        assert p.stat().st_size < limit, p
