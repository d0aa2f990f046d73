"""`annfs index` sizes a store's big text views into the index directory, and every mount that uses
that directory finds the sizes there: no size pass on a first `stat`, even with an empty cache
directory (a shared, admin-built index directory serves every node and user). Sizes follow the
store's identity: a changed store is sized again, never served with old offsets."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import ANNFS_BIN, Mount, mount_stats, run_annfs
from rows_mounts import entries, mdirs, need_mount, store_path  # noqa: F401 (a fixture)

MTX = "X/matrix.mtx"


def _index(store: Path, idx: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANNFS_BIN), "index", str(store), "--index-dir", str(idx)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_annfs_index_sizes_text_views_for_every_mount(need_mount, tmp_path):
    src = store_path("real_pbmc68k_reduced_legacy")
    store = tmp_path / "s.h5ad"
    shutil.copy(src, store)
    want = entries(src, [x for x in mdirs(src) if x.rel == "X"][0]).mtx()
    idx = tmp_path / "idx"

    # Run from the store's directory with a relative path: mounts name it by its absolute path.
    r = _index(Path(store.name), idx, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^text views: [1-9][0-9]* sizes written", r.stderr, re.M), r.stderr
    (layouts,) = idx.glob("*.layouts")
    assert MTX.encode() in layouts.read_bytes()

    # A fresh cache directory: the sizes come from the index directory, no pass over the data.
    with Mount(store, tmp_path / "m1", "--cache-dir", str(tmp_path / "c1"), "--index-dir", str(idx)) as m:
        assert os.stat(m.mnt / MTX).st_size == len(want)
        with open(m.mnt / MTX, "rb") as f:
            f.seek(-100, os.SEEK_END)
            assert f.read() == want[-100:]
        assert (m.mnt / MTX).read_bytes() == want
        s = mount_stats(m.mnt)
        assert s["text_views_sized"] == 0 and s["text_layouts_remembered"] >= 1, s

    # Nothing left to size on a second run.
    r = _index(store, idx)
    assert r.returncode == 0 and "text views: 0 sizes written" in r.stderr, r.stderr

    # The store touched (its identity changed): the old sizes are not used, the view is sized again.
    st = store.stat()
    os.utime(store, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    with Mount(store, tmp_path / "m2", "--cache-dir", str(tmp_path / "c2"), "--index-dir", str(idx)) as m:
        assert (m.mnt / MTX).read_bytes() == want
        assert os.stat(m.mnt / MTX).st_size == len(want)
        assert mount_stats(m.mnt)["text_views_sized"] >= 1


def test_a_layout_that_does_not_fit_fails_the_file_not_the_bytes(need_mount, tmp_path):
    """A remembered layout whose offsets parse but do not fit the data (damaged, or written for other data
    under the same identity) never places bytes wrongly: the file's reads fail with EIO and a log line."""
    src = store_path("real_pbmc68k_reduced_legacy")
    store = tmp_path / "s.h5ad"
    shutil.copy(src, store)
    want = entries(src, [x for x in mdirs(src) if x.rel == "X"][0]).mtx()
    idx = tmp_path / "idx"
    assert _index(store, idx).returncode == 0
    (layouts,) = idx.glob("*.layouts")
    lines = []
    for line in layouts.read_text().splitlines():
        entry = json.loads(line)
        if entry["key"] == MTX:
            # Every block but the first one byte further on: still increasing, the size one byte more.
            entry["offsets"] = [o + (1 if i else 0) for i, o in enumerate(entry["offsets"])]
        lines.append(json.dumps(entry))
    layouts.write_text("\n".join(lines) + "\n")
    with Mount(store, tmp_path / "m", "--cache-dir", str(tmp_path / "c"), "--index-dir", str(idx)) as m:
        assert os.stat(m.mnt / MTX).st_size == len(want) + 1
        try:
            got = (m.mnt / MTX).read_bytes()
        except OSError as e:
            assert e.errno == errno.EIO, e
        else:
            raise AssertionError(f"read {len(got)} bytes through a layout that does not fit")
        assert "its layout says" in m.stderr(), m.stderr()
        # The other files are served as without the layouts.
        assert (m.mnt / "obs.tsv").read_bytes() == run_annfs("cat", str(store), "obs.tsv").stdout
