"""Directory listings carry their entries' attributes (`readdirplus`) where they are cheap.

`ls -l` of a collection of hundreds of stores costs a few listing requests, not a lookup per store (counted in
`.annfs/stats.json` → `lookups`), and opens no store; the sizes `ls -l` and `find` show on a fresh mount are
the files' real lengths (a text view not yet sized is listed with attributes that expire at once, so the kernel
looks it up, and sizes it, before showing it); and a plain `ls -R` of a store sizes no text view.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, Mount, mount_stats as stats, need_fuse

pytestmark = need_fuse


def test_ls_l_of_a_collection_looks_up_no_store(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    one = FIXTURES / "empty_obs_no_x.h5ad"
    n = 300
    for i in range(n):
        os.link(one, src / f"s{i:03d}.h5ad")
    with Mount(src, tmp_path / "mnt") as m:
        before = stats(m.mnt)["lookups"]
        out = subprocess.run(["ls", "-l", str(m.mnt)], check=True, capture_output=True, text=True).stdout
        rows = [r.split() for r in out.splitlines() if r.endswith(".h5ad")]
        assert sorted(r[-1] for r in rows) == [f"s{i:03d}.h5ad" for i in range(n)]
        assert all(r[0].startswith("d") for r in rows), rows[:3]
        s = stats(m.mnt)
        # Without attributes in the listing, every entry would be looked up (n lookups).
        assert s["lookups"] - before < n // 10, s["lookups"] - before
        assert s["stores_opened"] == 0, s
        # The stores are as reachable as ever.
        assert (m.mnt / "s123.h5ad" / "obs.tsv").read_bytes() == (m.mnt / "s007.h5ad" / "obs.tsv").read_bytes()


def _listed_sizes(mnt: Path, depth: int) -> dict[str, int]:
    """`find`'s sizes of the regular files down to `depth` (below `rows/` and `where/`, lazy views, not)."""
    out = subprocess.run(["find", str(mnt), "-maxdepth", str(depth), "(", "-name", "rows", "-o", "-name", "where", ")",
                          "-prune", "-o", "-type", "f", "-printf", "%s\t%P\n"], check=True, capture_output=True,
                         text=True).stdout
    return {p: int(s) for s, p in (line.split("\t", 1) for line in out.splitlines())}


@pytest.mark.parametrize("fixture", ["csr_gzip.h5ad", "real_pbmc68k_reduced_legacy.h5ad"])
def test_listed_sizes_are_real_sizes(tmp_path, fixture):
    with Mount(FIXTURES / fixture, tmp_path / "mnt", "--cache-dir", str(tmp_path / "cache")) as m:
        sizes = _listed_sizes(m.mnt, 3)
        assert "obs.tsv" in sizes and "X/matrix.mtx" in sizes, sorted(sizes)[:20]
        for p, size in sizes.items():
            if p.startswith(".annfs/"):
                continue  # live files: their content moves between the listing and the read
            assert len((m.mnt / p).read_bytes()) == size, p
        # `ls -l` shows the same sizes again, now from the kernel's cache.
        out = subprocess.run(["ls", "-l", str(m.mnt)], check=True, capture_output=True, text=True).stdout
        listed = {r.split()[-1]: int(r.split()[4]) for r in out.splitlines() if r.startswith("-")}
        assert all(listed[k] == sizes[k] for k in listed if k in sizes), listed


def test_plain_ls_sizes_no_text_view(tmp_path):
    with Mount(FIXTURES / "real_pbmc68k_reduced_legacy.h5ad", tmp_path / "mnt", "--cache-dir", str(tmp_path / "c")) as m:
        subprocess.run(["ls", "-R", str(m.mnt / "obs"), str(m.mnt / "var"), str(m.mnt / "X"), str(m.mnt)],
                       check=True, capture_output=True)
        assert stats(m.mnt)["text_views_sized"] == 0
        # `ls -l` of the same directory sizes them, as a lookup always has.
        subprocess.run(["ls", "-l", str(m.mnt / "obs")], check=True, capture_output=True)
        assert stats(m.mnt)["text_views_sized"] > 0
