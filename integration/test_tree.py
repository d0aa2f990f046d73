"""The mounted tree equals the oracle, byte for byte, for every committed fixture and one fresh random store."""
from __future__ import annotations

import io
import json
import os
import random
import re
import zlib

import numpy as np
import pandas as pd

import checks
import oracle
from conftest import Mount, walk_files


def _oracle(store):
    return oracle.expected_tree(store), oracle.expected_dirs(store)


def test_every_file_bytes_and_size(store, mounted):
    tree, _ = _oracle(store)
    bad = []
    for rel, want in sorted(tree.items()):
        p = mounted.mnt / rel
        st = os.stat(p)
        got = p.read_bytes()
        if got != want:
            bad.append(f"{rel}: content differs ({len(got)} vs {len(want)} bytes)")
        if st.st_size != len(want):
            bad.append(f"{rel}: st_size {st.st_size} != {len(want)}")
    assert not bad, "\n".join(bad[:20])


def test_file_set(store, mounted):
    tree, dirs = _oracle(store)
    files, mdirs = walk_files(mounted.mnt)
    missing = set(tree) - files
    assert not missing, f"missing from the mount: {sorted(missing)[:20]}"
    extra = {f for f in files - set(tree) if not oracle.is_allowed_extra(f)}
    assert not extra, f"unexpected files in the mount: {sorted(extra)[:20]}"
    missing_dirs = dirs - mdirs
    assert not missing_dirs, f"missing directories: {sorted(missing_dirs)[:20]}"
    extra_dirs = {d for d in mdirs - dirs if not oracle.is_allowed_extra(d + "/x")}
    assert not extra_dirs, f"unexpected directories: {sorted(extra_dirs)[:20]}"
    assert "README.txt" in files
    assert {".annfs/info.json", ".annfs/stats.json"} <= files


def test_npy_mmap_equals_anndata(store, mounted):
    import anndata as ad
    adata = ad.read_h5ad(store)
    want = checks.anndata_arrays(adata)
    tree, _ = _oracle(store)
    for rel in sorted(p for p in tree if p.endswith(".npy")):
        arr = np.load(mounted.mnt / rel, mmap_mode="r")
        ref = np.load(io.BytesIO(tree[rel]))
        checks.assert_npy_equal(arr, ref, rel)
        if rel in want:
            checks.assert_npy_equal(arr, want[rel], rel + " vs anndata", exact_dtype=not rel.endswith(".codes.npy"))
        del arr


def test_tsv_with_pandas(store, mounted):
    import anndata as ad
    adata = ad.read_h5ad(store)
    checks.assert_tsv_matches_df((mounted.mnt / "obs.tsv").read_bytes(), adata.obs, "obs.tsv")
    back = pd.read_csv(mounted.mnt / "obs.tsv", sep="\t", index_col=0, float_precision="round_trip")
    assert len(back) == adata.n_obs
    checks.assert_tsv_matches_df((mounted.mnt / "var.tsv").read_bytes(), adata.var, "var.tsv")
    if adata.raw is not None:
        checks.assert_tsv_matches_df((mounted.mnt / "raw/var.tsv").read_bytes(), adata.raw.var, "raw/var.tsv")


def test_readme_and_control_files(store, mounted):
    import anndata as ad
    adata = ad.read_h5ad(store, backed="r")
    n, m = adata.n_obs, adata.n_vars
    adata.file.close()
    readme = (mounted.mnt / "README.txt").read_text()
    assert os.stat(mounted.mnt / "README.txt").st_size == len(readme.encode())
    assert re.search(rf"\b{n}\b", readme) and re.search(rf"\b{m}\b", readme), \
        f"README.txt does not mention the shape {n} x {m}"
    info = json.loads((mounted.mnt / ".annfs/info.json").read_bytes())
    assert isinstance(info, dict)
    stats = json.loads((mounted.mnt / ".annfs/stats.json").read_bytes())
    assert isinstance(stats, dict)


def test_random_ranges(store, mounted):
    """pread at random offsets/lengths equals the slice of the oracle bytes (incl. past EOF)."""
    tree, _ = _oracle(store)
    rng = random.Random(zlib.crc32(store.name.encode()))
    paths = sorted(tree)
    for rel in rng.sample(paths, min(len(paths), 60)):
        want = tree[rel]
        fd = os.open(mounted.mnt / rel, os.O_RDONLY)
        try:
            for _ in range(8):
                off = rng.randrange(0, len(want) + 16)
                ln = rng.choice([1, 7, 64, 4096, 65536, rng.randrange(1, len(want) + 2)])
                got = os.pread(fd, ln, off)
                assert got == want[off:off + ln], f"{rel} [{off}, +{ln})"
        finally:
            os.close(fd)


def test_unknown_names_enoent(mounted):
    import errno
    for rel in ("nope", "obs/nope.txt", "X/nope", "uns/nope/deeper", "obs.tsv/x"):
        try:
            os.stat(mounted.mnt / rel)
        except OSError as e:
            assert e.errno in (errno.ENOENT, errno.ENOTDIR), (rel, e)
        else:
            raise AssertionError(f"{rel} exists")


def test_ls_recursive_matches_mount(store, mounted):
    """`annfs ls -r STORE` lists the same file set as the mount (walking rows/ too, as ls -r does); names with a
    newline (a category label in where/) are escaped in the listing."""
    from conftest import escape_listed as conftest_escape
    from conftest import run_annfs
    r = run_annfs("ls", "-r", store)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    listed = {line for line in r.stdout.decode().split("\n") if line}
    files, _ = walk_files(mounted.mnt, skip_dirs=())
    files = {conftest_escape(f) for f in files}
    assert listed == files, (f"only in ls -r: {sorted(listed - files)[:10]}; "
                             f"only in mount: {sorted(files - listed)[:10]}")


def test_long_names_are_cut_listable_and_readable(tmp_path):
    """A name longer than a path component allows (Linux opens none over 255 bytes; FUSE fails a whole listing
    holding one over 1,024) is cut to its first bytes + `%~` + the FNV-1a hash of the name (docs/TREE.md): the
    rest of its directory lists as before and every file of it reads."""
    import anndata as ad

    long_key, long_col, long_label, long_obsm = "k" * 5000, "c=" * 150, "é" * 300, "m" * 300
    obs = pd.DataFrame({long_col: pd.Categorical([long_label, "b", long_label]), "n": [1, 2, 3]}, index=["x", "y", "z"])
    a = ad.AnnData(X=np.ones((3, 2), np.float32), obs=obs, var=pd.DataFrame(index=["g0", "g1"]))
    a.uns[long_key] = np.arange(4)
    a.uns["short"] = np.arange(2)
    a.obsm[long_obsm] = np.full((3, 2), 7.0)
    store = tmp_path / "long.h5ad"
    a.write_h5ad(store)
    with Mount(store, tmp_path / "m") as m:
        key = oracle.cut(long_key, long_key)
        uns = sorted(os.listdir(m.mnt / "uns"))
        assert uns == sorted([f"{key}.npy", f"{key}.txt", "short.npy", "short.txt"]), uns
        assert np.load(m.mnt / "uns" / f"{key}.npy").tolist() == [0, 1, 2, 3]
        col = oracle.encode_col(long_col)
        assert len(col.encode()) <= oracle.MAX_STEM and "%~" in col
        assert {f"{col}.txt", f"{col}.codes.npy", f"{col}.categories.txt", "n.txt"} <= set(os.listdir(m.mnt / "obs"))
        assert (m.mnt / "obs" / f"{col}.txt").read_text().splitlines() == [long_label, "b", long_label]
        head = oracle.cut(oracle.encode_col_uncut(long_col).replace("=", "%3D"), long_col) + "="
        value = oracle.cut(long_label, long_label, 254 - len(head.encode()))
        where = os.listdir(m.mnt / "where")
        assert head + value in where and head + "b" in where, where
        assert all(len(n.encode()) <= 255 for n in where + uns)
        assert (m.mnt / "where" / (head + value) / "obs" / "index.txt").read_text().splitlines() == ["x", "z"]
        mk = oracle.cut(long_obsm, long_obsm)
        assert np.load(m.mnt / "obsm" / f"{mk}.npy").tolist() == [[7.0, 7.0]] * 3
