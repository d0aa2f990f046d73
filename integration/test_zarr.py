"""Zarr backends: every zarr twin of a fixture (v2, v3, sharded v3; local and over HTTP) mounts to the same tree,
with the same bytes, as its h5ad (and as the oracle computed from anndata); HTTP failures give EIO and recover;
bad Zarr input fails clearly.

Zarr twins: tests/fixtures/zarr/<stem>.<variant>.zarr (scripts/make_zarr_fixtures.py), plus the fresh random store
written by anndata as v2/v3/sharded v3 at session start.  The HTTP server is integration/range_server.py (honours
Range, incl. suffix ranges) on 127.0.0.1.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import oracle
from servers import RangeServer as Server
from conftest import (_WORK, ANNFS_BIN, FIXTURES, REPO, Mount, fuse_skip_reason, is_mounted, need_fuse,
                      store_path, walk_files)

ZARR = FIXTURES / "zarr"
TWINS = sorted(p for p in ZARR.glob("*.zarr"))


def twin_stem(p: Path) -> str:
    return p.name[: -len(".zarr")].rsplit(".", 1)[0]


_FRESH_TWINS: dict[str, Path] = {}


def fresh_twin(variant: str) -> Path:
    """The fresh random store written by anndata as zarr `variant` (once per session)."""
    if variant not in _FRESH_TWINS:
        import anndata as ad
        sys.path.insert(0, str(REPO / "scripts"))
        import make_zarr_fixtures as mz
        out = _WORK / f"fresh.{variant}.zarr"
        mz.write(ad.read_h5ad(store_path("fresh")), out, variant)
        _FRESH_TWINS[variant] = out
    return _FRESH_TWINS[variant]


_ORACLE: dict[str, dict] = {}


def expected(stem: str) -> dict[str, bytes]:
    if stem not in _ORACLE:
        _ORACLE[stem] = oracle.expected_tree(store_path(stem))
    return _ORACLE[stem]


_MOUNTS: list[Mount] = []


def mount(store, *extra) -> Mount:
    reason = fuse_skip_reason()
    if reason:
        pytest.skip(reason)
    name = Path(str(store)).name.replace(":", "_").replace("/", "_")
    m = Mount(Path(str(store)), _WORK / "zmnt" / f"{name}-{len(_MOUNTS)}", *extra)
    # Mount(store) stores a Path; for URLs pass the string through unchanged.
    m.store = store
    m.start()
    _MOUNTS.append(m)
    return m


@pytest.fixture(scope="module", autouse=True)
def _cleanup_and_unchanged():
    def digest():
        h = hashlib.sha256()
        for f in sorted(ZARR.rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(ZARR)).encode())
                h.update(f.read_bytes())
        return h.hexdigest()
    before = digest()
    yield
    for m in _MOUNTS:
        m.stop()
    _MOUNTS.clear()
    assert digest() == before, "a zarr fixture was modified"


def compare_mount(m: Mount, stem: str) -> None:
    want = expected(stem)
    bad = []
    for rel, data in sorted(want.items()):
        p = m.mnt / rel
        got = p.read_bytes()
        if got != data:
            bad.append(f"{rel}: content differs ({len(got)} vs {len(data)} bytes)")
        elif os.stat(p).st_size != len(data):
            bad.append(f"{rel}: st_size {os.stat(p).st_size} != {len(data)}")
    files, _ = walk_files(m.mnt)
    extra = {f for f in files - set(want) if not oracle.is_allowed_extra(f)}
    assert not extra, f"unexpected files: {sorted(extra)[:10]}"
    assert not bad, "\n".join(bad[:20])
    info = json.loads((m.mnt / ".annfs/info.json").read_bytes())
    assert json.dumps(info).find('"zarr"') >= 0, info


# ----------------------------------------------------------------------------------------------------------------
# Local stores
# ----------------------------------------------------------------------------------------------------------------

@need_fuse
@pytest.mark.parametrize("twin", TWINS, ids=[p.name for p in TWINS])
def test_twin_equals_h5ad_and_oracle(twin):
    m = mount(twin)
    try:
        compare_mount(m, twin_stem(twin))
    finally:
        m.stop()


@need_fuse
@pytest.mark.parametrize("variant", ["v2", "v3", "v3s"])
def test_fresh_store_every_backend(variant):
    m = mount(fresh_twin(variant))
    try:
        compare_mount(m, "fresh")
        # The file sets of the h5ad and the zarr mounts are identical (rows/ listings included).
        h5 = mount(store_path("fresh"))
        try:
            zf, zd = walk_files(m.mnt, skip_dirs=())
            hf, hd = walk_files(h5.mnt, skip_dirs=())
            assert zf == hf and zd == hd
            for rel in sorted(f for f in zf if "/rows/" in f or f.startswith("rows/"))[:40]:
                assert (m.mnt / rel).read_bytes() == (h5.mnt / rel).read_bytes(), rel
        finally:
            h5.stop()
    finally:
        m.stop()


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture
def server():
    s = Server(ZARR)
    yield s
    s.kill()


@need_fuse
@pytest.mark.parametrize("name", ["dense_f32.v2.zarr", "dense_f32.v3s.zarr", "csr_gzip.v3.zarr"])
def test_http_equals_h5ad_and_oracle(server, name):
    m = mount(server.url(name))
    try:
        compare_mount(m, twin_stem(ZARR / name))
    finally:
        m.stop()


@need_fuse
def test_a_stalled_read_gets_eio_at_the_request_deadline():
    """A server that stops answering data requests: the read fails with EIO at --request-timeout (2 s here),
    not after the HTTP timeout (30 s), and the mount keeps answering everything else."""
    srv = Server(ZARR, "--stall", r"/X/(data|indices|indptr)/", "--stall-secs", "40")
    m = mount(srv.url("csr_gzip.v3.zarr"), "--request-timeout", "2")
    try:
        want = expected("csr_gzip")
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            (m.mnt / "X" / "csr" / "data.npy").read_bytes()
        took = time.monotonic() - t0
        assert e.value.errno == errno.EIO
        assert 1.5 < took < 10, f"answered after {took:.1f} s"
        assert m.proc.poll() is None and is_mounted(m.mnt)
        assert (m.mnt / "obs.tsv").read_bytes() == want["obs.tsv"]
        stats = json.loads((m.mnt / ".annfs" / "stats.json").read_bytes())
        assert stats["deadline_expired"] >= 1
    finally:
        m.stop()
        srv.kill()


@need_fuse
def test_http_server_dies_mid_read_then_recovers(tmp_path):
    srv = Server(ZARR)
    port = srv.port
    m = mount(srv.url("dense_f32.v3s.zarr"), "--cache-size", "1M")
    try:
        want = expected("dense_f32")
        assert (m.mnt / "obs.tsv").read_bytes() == want["obs.tsv"]
        srv.kill()
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            (m.mnt / "X" / "dense.npy").read_bytes()
        assert e.value.errno == errno.EIO
        assert time.monotonic() - t0 < 20, "a failed read must not hang"
        # The mount is alive: metadata and cached files still answer.
        assert is_mounted(m.mnt) and m.proc.poll() is None
        assert (m.mnt / "README.txt").read_bytes()
        srv = Server(ZARR, port=port)
        assert (m.mnt / "X" / "dense.npy").read_bytes() == want["X/dense.npy"]
        assert (m.mnt / "layers").exists()
    finally:
        m.stop()
        srv.kill()


@need_fuse
def test_http_missing_and_forbidden_fail_at_mount(tmp_path):
    srv = Server(ZARR)
    try:
        r = subprocess.run([str(ANNFS_BIN), "mount", srv.url("nope.zarr"), str(tmp_path)], capture_output=True,
                           timeout=30)
        assert r.returncode != 0 and b"404" in r.stderr, r.stderr
        assert not is_mounted(tmp_path)
    finally:
        srv.kill()
    srv = Server(ZARR, "--forbid")
    try:
        r = subprocess.run([str(ANNFS_BIN), "ls", srv.url("dense_f32.v3.zarr")], capture_output=True, timeout=30)
        assert r.returncode != 0 and b"403" in r.stderr, r.stderr
    finally:
        srv.kill()
    # Nothing listens: a clear error, quickly.
    t0 = time.monotonic()
    r = subprocess.run([str(ANNFS_BIN), "ls", f"http://127.0.0.1:{srv.port}/x.zarr"], capture_output=True, timeout=60)
    assert r.returncode != 0 and r.stderr, r.stderr
    assert time.monotonic() - t0 < 30


@need_fuse
def test_http_disk_cache_avoids_refetch(tmp_path):
    log = tmp_path / "requests.log"
    srv = Server(ZARR, log=log)
    cache = tmp_path / "dcache"
    try:
        want = expected("csr_gzip")
        for round_ in range(2):
            m = mount(srv.url("csr_gzip.v3s.zarr"), "--disk-cache", str(cache), "-o", "disk_cache_size=64M")
            try:
                for rel in ("X/csr/data.npy", "X/dense.npy", "obs.tsv"):
                    assert (m.mnt / rel).read_bytes() == want[rel], rel
            finally:
                m.stop()
            lines = log.read_text().splitlines()
            # HEADs are freshness checks of cached entries, not data requests.
            chunk_gets = [l for l in lines if l.startswith("GET ")
                          and not any(k in l for k in ("zarr.json", ".zmetadata", ".zgroup"))]
            if round_ == 0:
                assert chunk_gets, "first mount fetched no chunks"
                assert any(l.split()[-1] != "-" for l in chunk_gets), "no range requests for a sharded store"
                log.write_text("")
            else:
                assert not chunk_gets, f"re-mount refetched: {chunk_gets[:5]}"
        # A corrupted cache entry is detected and refetched, never served.
        for f in cache.iterdir():
            b = bytearray(f.read_bytes())
            b[-1] ^= 0xFF
            f.write_bytes(bytes(b))
        m = mount(srv.url("csr_gzip.v3s.zarr"), "--disk-cache", str(cache))
        try:
            assert (m.mnt / "X/dense.npy").read_bytes() == want["X/dense.npy"]
        finally:
            m.stop()
    finally:
        srv.kill()


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------

def _copy(name: str, tmp_path: Path, drop_consolidated=True) -> Path:
    dst = tmp_path / name
    shutil.copytree(ZARR / name, dst)
    if drop_consolidated:
        (dst / ".zmetadata").unlink(missing_ok=True)
        root = dst / "zarr.json"
        if root.exists():
            doc = json.loads(root.read_text())
            doc.pop("consolidated_metadata", None)
            root.write_text(json.dumps(doc))
    return dst


def _eio(path: Path):
    with pytest.raises(OSError) as e:
        path.read_bytes()
    assert e.value.errno == errno.EIO, e.value


@need_fuse
def test_a_sequential_read_drops_behind_what_it_passed(tmp_path):
    """A reader streaming through a chunked array leaves the cache behind it: the chunks it passed are dropped and
    their buffers take the chunks decoded next (`.annfs/stats.json`: `dropped_behind`, `chunks_recycled`), so a
    read of 8 MB does not fault in 8 MB of fresh memory. Every byte stays what anndata wrote, read whole twice (the
    second read decodes again); a read from the middle of the file (a seek) drops nothing and is cached. Replies
    of whole-row chunks are written from the cached chunks themselves (`bytes_sent_from_cache`)."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp
    x = np.random.default_rng(7).random((20000, 100), dtype=np.float32)
    counts = sp.random(20000, 100, density=0.1, format="csr", dtype=np.float32, random_state=7)
    store = tmp_path / "stream.zarr"
    ad.AnnData(X=x, layers={"counts": counts}).write_zarr(store, chunks=(500, 64))
    chunks = 40 * 2  # 40 bands of 500 rows, two column chunks each
    m = mount(store, "--cache-size", "64M")
    stats = lambda: json.loads((m.mnt / ".annfs/stats.json").read_bytes())
    npy = m.mnt / "X" / "dense.npy"
    assert np.array_equal(np.load(npy), x)
    first = stats()
    assert first["dropped_behind"] >= chunks * 3 // 4, first
    assert first["chunks_recycled"] > 0, first
    assert np.array_equal(np.load(npy), x)
    second = stats()
    assert second["chunks_decoded"] - first["chunks_decoded"] >= chunks * 3 // 4, second
    header = npy.stat().st_size - x.nbytes
    at = header + 10000 * 400
    with open(npy, "rb", buffering=0) as f:
        f.seek(at)
        assert f.read(400 * 1000) == x[10000:11000].tobytes()
    third = stats()
    assert third["dropped_behind"] == second["dropped_behind"], third
    with open(npy, "rb", buffering=0) as f:
        f.seek(at)
        assert f.read(400 * 1000) == x[10000:11000].tobytes()
    assert stats()["chunks_decoded"] == third["chunks_decoded"], "the seek's chunks stay cached"
    # Densified CSR rows drop the chunks of `indices` and `data` their entries ended in.
    assert np.array_equal(np.load(m.mnt / "layers" / "counts" / "dense.npy"), counts.toarray())
    assert stats()["dropped_behind"] > third["dropped_behind"]
    # A 1-D array's replies are written straight from its cached chunks (no reply buffer).
    assert np.array_equal(np.load(m.mnt / "layers" / "counts" / "csr" / "data.npy"), counts.data)
    assert stats()["bytes_sent_from_cache"] > counts.data.nbytes // 2, stats()


@need_fuse
def test_malformed_metadata_fails_at_mount(tmp_path):
    s = _copy("dense_f32.v2.zarr", tmp_path)
    (s / "obs" / "int8" / ".zarray").write_text("{ not json")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([str(ANNFS_BIN), "mount", str(s), str(mnt)], capture_output=True, timeout=30)
    assert r.returncode != 0
    assert b"obs/int8/.zarray" in r.stderr and b"JSON" in r.stderr, r.stderr
    assert not is_mounted(mnt)


@need_fuse
def test_bad_chunks_give_eio_only_there(tmp_path):
    s = _copy("dense_f32.v3s.zarr", tmp_path)
    # Shard index pointing past the end: cut the first X shard in half.
    shard = s / "X" / "c" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    # Unsupported codec in one column.
    meta = s / "obs" / "int16" / "zarr.json"
    meta.write_text(meta.read_text().replace('"zstd"', '"no-such-codec"'))
    s2 = _copy("dense_f32.v2.zarr", tmp_path)
    # Garbage chunk (wrong size / undecodable) and a truncated chunk.
    (s2 / "obs" / "int32" / "0").write_bytes(b"\x00" * 7)
    c = s2 / "obsm" / "X_pca" / "0.0"
    c.write_bytes(c.read_bytes()[:-5])
    want = expected("dense_f32")
    for store, bad, good in [(s, ["X/dense.npy", "obs/int16.npy"], ["obs/int8.npy", "var.tsv"]),
                             (s2, ["obs/int32.npy", "obsm/X_pca.npy"], ["obs/int8.npy", "X/dense.npy"])]:
        m = mount(store)
        try:
            for rel in bad:
                _eio(m.mnt / rel)
            for rel in good:
                assert (m.mnt / rel).read_bytes() == want[rel], rel
            assert m.proc.poll() is None and is_mounted(m.mnt)
        finally:
            m.stop()
        assert "corrupt" in m.stderr() or "unsupported" in m.stderr(), m.stderr()


@need_fuse
def test_zip_is_a_clear_error(tmp_path):
    z = tmp_path / "s.zarr.zip"
    z.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    r = subprocess.run([str(ANNFS_BIN), "ls", str(z)], capture_output=True, timeout=30)
    assert r.returncode != 0 and b"not supported" in r.stderr, r.stderr
