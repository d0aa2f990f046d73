"""Checks shared by the remote-store tests (test_remote.py: HTTP and S3; test_cloud.py: GCS and Azure): mount a
URL, compare its tree byte for byte with the same store mounted from the local disk, a collection under a prefix
with the same layout in a local directory, and the refusal of an unconsolidated remote Zarr v2 store."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from conftest import ANNFS_BIN, COMMITTED, FIXTURES, Mount, walk_files

ZARR = FIXTURES / "zarr"
H5AD = [p for p in COMMITTED if p.stat().st_size < 4 << 20]
ZARRS = sorted(p.name for p in ZARR.glob("*.zarr"))


def when_up(make, proc, timeout: float):
    """`make()`'s result once the server started as `proc` answers it (retried every 0.2 s); the last error
    when the server exits or `timeout` seconds pass (the server is killed then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return make()
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)


def consolidated(name: str) -> bool:
    """Whether a Zarr twin has consolidated metadata (remote v2 stores need it: HTTP cannot list)."""
    root = ZARR / name
    if (root / ".zmetadata").exists():
        return True
    doc = root / "zarr.json"
    return doc.exists() and "consolidated_metadata" in json.loads(doc.read_text())


def mount(store: str, *extra: str, env: dict | None = None, tag: str = "remote") -> Mount:
    mnt = Path(os.environ.get("TMPDIR", "/tmp")) / f"annfs-{tag}-{os.getpid()}-{time.monotonic_ns()}"
    m = Mount(Path(store), mnt, *extra)
    m.store = store  # a URL stays a string (Path would fold its `//`)
    if env is None:
        return m.start()
    old = dict(os.environ)
    os.environ.update(env)
    try:
        return m.start()
    finally:
        os.environ.clear()
        os.environ.update(old)


def same_tree(remote: Mount, local: Mount) -> None:
    """Every file of the local mount (rows/ and where/ aside) reads the same through the remote one."""
    rf, rd = walk_files(remote.mnt)
    lf, ld = walk_files(local.mnt)
    assert rf == lf and rd == ld, (sorted(rf ^ lf)[:10], sorted(rd ^ ld)[:10])
    bad = [rel for rel in sorted(lf) if not rel.startswith(".annfs/") and rel != "README.txt"
           and (remote.mnt / rel).read_bytes() != (local.mnt / rel).read_bytes()]
    assert not bad, bad[:10]
    # The root README names the store: the same text but for its location.
    readme = (remote.mnt / "README.txt").read_text().replace(str(remote.store), str(local.store))
    assert readme == (local.mnt / "README.txt").read_text()
    for rel in sorted(lf)[:200]:
        if not rel.startswith(".annfs/") and rel != "README.txt":
            assert os.stat(remote.mnt / rel).st_size == os.stat(local.mnt / rel).st_size, rel


def unconsolidated_fails(url: str, env: dict | None) -> None:
    """A remote Zarr v2 store without consolidated metadata is refused at mount with a clear message."""
    r = subprocess.run([str(ANNFS_BIN), "ls", url], capture_output=True, timeout=60,
                       env=dict(os.environ, **(env or {})))
    assert r.returncode != 0 and b"needs consolidated metadata" in r.stderr and url.encode() in r.stderr, r.stderr


def remote_zarr_equals_local(r: Mount, loc: Mount) -> None:
    """Every file of a remote Zarr mount reads as in the local mount, the transposed copies of stored sparse
    matrices (`csc/` of a CSR matrix: gene-column indexes keyed by the consolidated metadata's version) included."""
    rf, _ = walk_files(r.mnt)
    lf, _ = walk_files(loc.mnt)
    assert rf == lf, sorted(rf ^ lf)[:5]
    bad = [f for f in sorted(rf) if not f.startswith(".annfs/") and f != "README.txt"
           and (r.mnt / f).read_bytes() != (loc.mnt / f).read_bytes()]
    assert not bad, bad[:10]


def collection_layout(root: Path) -> Path:
    """A small collection in local directory `root`: two .h5ad stores (one in a sub-directory), a Zarr store and a
    file that is no store."""
    layout = {"study1/a.h5ad": FIXTURES / "dense_f32.h5ad", "c.h5ad": FIXTURES / "csr_gzip.h5ad",
              "study1/notes.txt": FIXTURES / "SOURCES.md"}
    for rel, src in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    shutil.copytree(ZARR / "csr_gzip.v3.zarr", root / "b.zarr")
    return root


def same_collection(url: str, local: Path, env: dict) -> None:
    """The collection at prefix `url` (holding collection_layout's files) mounts like the local directory: .h5ad
    objects and `*.zarr` prefixes are stores, other prefixes directories, other objects hidden."""
    r = mount(url, env=env)
    loc = mount(str(local))
    try:
        assert sorted(os.listdir(r.mnt)) == sorted(os.listdir(loc.mnt)) == [".annfs", "README.txt", "b.zarr",
                                                                            "c.h5ad", "study1"]
        assert os.listdir(r.mnt / "study1") == ["a.h5ad"]
        for store in ("study1/a.h5ad", "c.h5ad", "b.zarr"):
            rf, _ = walk_files(r.mnt / store)
            lf, _ = walk_files(loc.mnt / store)
            assert rf == lf, (store, sorted(rf ^ lf)[:5])
            bad = [f for f in sorted(rf) if not f.startswith(".annfs/") and f != "README.txt"
                   and (r.mnt / store / f).read_bytes() != (loc.mnt / store / f).read_bytes()]
            assert not bad, (store, bad[:5])
        rows = lambda m: [ln.split("\t")[:4] for ln in (m.mnt / ".annfs" / "collection.tsv").read_text().splitlines()]
        assert rows(r) == rows(loc)
        assert url in (r.mnt / "README.txt").read_text()
    finally:
        r.stop()
        loc.stop()
