"""`annfs ls / cat / info` without FUSE (same code path as the mount)."""
from __future__ import annotations

import random

import pytest

import oracle
from conftest import need_bin, run_annfs

pytestmark = need_bin


def _sample(tree, k, seed):
    paths = sorted(tree)
    rng = random.Random(seed)
    # always include the tables and a few of each kind
    must = [p for p in ("obs.tsv", "var.tsv", "obs/index.txt", "X/dense.npy") if p in tree]
    return must + rng.sample(paths, min(k, len(paths)))


def test_cat_equals_oracle(store):
    tree = oracle.expected_tree(store)
    bad = []
    for rel in _sample(tree, 25, store.name):
        r = run_annfs("cat", store, rel)
        if r.returncode != 0:
            bad.append(f"{rel}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
        elif r.stdout != tree[rel]:
            bad.append(f"{rel}: {len(r.stdout)} bytes, expected {len(tree[rel])}")
    assert not bad, "\n".join(bad)


def test_ls_recursive_covers_oracle(store):
    tree = oracle.expected_tree(store)
    r = run_annfs("ls", "-r", store)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    listed = {line for line in r.stdout.decode().split("\n") if line}
    assert not any(p.startswith("/") or p.endswith("/") for p in listed)
    missing = set(tree) - listed
    assert not missing, f"ls -r misses {sorted(missing)[:10]}"
    extra = {p for p in listed - set(tree) if not oracle.is_allowed_extra(p)}
    assert not extra, f"ls -r lists unexpected {sorted(extra)[:10]}"


def test_ls_recursive_subdir(store):
    tree = oracle.expected_tree(store)
    r = run_annfs("ls", "-r", store, "obs")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    listed = {line for line in r.stdout.decode().split("\n") if line}
    want = {p[len("obs/"):] for p in tree if p.startswith("obs/")}
    # relative to PATH (documented reading); also accept paths relative to the root
    assert listed == want or listed == {f"obs/{p}" for p in want}, sorted(listed ^ want)[:10]


def test_ls_top_level(store):
    tree = oracle.expected_tree(store)
    dirs = oracle.expected_dirs(store)
    r = run_annfs("ls", store)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    entries = [line for line in r.stdout.decode().split("\n") if line]
    want = {p for p in tree if "/" not in p} | {d + "/" for d in dirs if "/" not in d}
    assert want <= set(entries), f"missing {sorted(want - set(entries))}"
    assert "README.txt" in entries
    for e in entries:
        name = e.rstrip("/")
        if e.endswith("/"):
            assert name in dirs or oracle.is_allowed_extra(name + "/x"), e
        else:
            assert name in tree or oracle.is_allowed_extra(name), e


def test_ls_subdir_marks_directories(store):
    dirs = oracle.expected_dirs(store)
    r = run_annfs("ls", store, "obs")
    assert r.returncode == 0
    entries = [line for line in r.stdout.decode().split("\n") if line]
    assert "index.txt" in entries
    for e in entries:
        assert not e.endswith("/") or f"obs/{e[:-1]}" in dirs


def test_info(store):
    import anndata as ad
    a = ad.read_h5ad(store, backed="r")
    n, m = a.n_obs, a.n_vars
    a.file.close()
    r = run_annfs("info", store)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = r.stdout.decode()
    assert str(n) in out and str(m) in out


@pytest.mark.parametrize("rel", ["nope.txt", "obs/nope.txt", "uns/does/not/exist"])
def test_cat_missing_path(rel):
    from conftest import FIXTURES
    r = run_annfs("cat", FIXTURES / "dense_f32.h5ad", rel)
    assert r.returncode != 0
    assert r.stderr.strip(), "an error message is expected"
