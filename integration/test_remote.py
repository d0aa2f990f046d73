"""Remote stores through the byte-range layer: `.h5ad` files and Zarr stores over HTTP and S3 (servers on
loopback that this module starts itself: integration/range_server.py, nginx and moto's S3 server), each mounted and
compared byte for byte with the same store mounted from the local disk; faults (5xx, truncated bodies, a dying
server, an object replaced under the mount), the validated disk cache, and clear mount-time errors."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import Nginx, RangeServer as Server, free_port
from conftest import ANNFS_BIN, FIXTURES, Mount, is_mounted, need_fuse
from remote_checks import (H5AD, ZARR, ZARRS, collection_layout, consolidated, mount, remote_zarr_equals_local,
                           same_collection, same_tree, unconsolidated_fails, when_up)

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_ALLOW_HTTP": "true"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server with bucket `atlas` holding the h5ad fixtures and the Zarr twins."""
    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        pytest.skip("moto_server is not installed (integration/requirements.txt)")
    port = free_port()
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3
    client = boto3.client("s3", endpoint_url=endpoint, **{"aws_access_key_id": "testing",
                                                           "aws_secret_access_key": "testing",
                                                           "region_name": "us-east-1"})
    when_up(lambda: client.create_bucket(Bucket="atlas"), proc, 30)
    for p in H5AD:
        client.upload_file(str(p), "atlas", f"h5ad/{p.name}")
    for name in ZARRS:
        root = ZARR / name
        for f in root.rglob("*"):
            if f.is_file():
                client.upload_file(str(f), "atlas", f"zarr/{name}/{f.relative_to(root).as_posix()}")
    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, **S3_ENV)
    yield env, client
    proc.kill()
    proc.wait()


def remote_stats(m: Mount) -> dict:
    return json.loads((m.mnt / ".annfs" / "stats.json").read_bytes())["remote"]


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A store larger than the remote block cache (16 MiB), so that reads go to the server."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    rng = np.random.default_rng(7)
    n, g = 6000, 800
    a = ad.AnnData(X=sp.random(n, g, density=0.1, format="csr", dtype=np.float32, random_state=rng),
                   obs=pd.DataFrame({"cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n))},
                                    index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    a.layers["dense"] = rng.random((n, g), dtype=np.float32)
    a.obsm["X_pca"] = rng.random((n, 50)).astype(np.float32)
    d = tmp_path_factory.mktemp("big")
    a.write_h5ad(d / "big.h5ad")
    return d / "big.h5ad"


BIG_FILES = ["layers/dense/dense.npy", "X/csr/data.npy", "X/csr/indices.npy", "X/dense.npy", "obsm/X_pca.npy",
             "obs.tsv", "var.tsv"]


def same_files(a: Mount, b: Mount, files=BIG_FILES) -> None:
    bad = [f for f in files if (a.mnt / f).read_bytes() != (b.mnt / f).read_bytes()]
    assert not bad, bad


@pytest.fixture(scope="module")
def http_fixtures():
    s = Server(FIXTURES)
    yield s
    s.kill()


@pytest.fixture(scope="module")
def nginx_fixtures():
    if not Nginx.available():
        pytest.skip("nginx is not installed (scripts/setup-tests.sh installs nginx-light)")
    s = Nginx(FIXTURES)
    yield s
    s.kill()


@need_fuse
@pytest.mark.parametrize("path", H5AD, ids=[p.stem for p in H5AD])
def test_http_h5ad_equals_local(http_fixtures, path):
    r = mount(http_fixtures.url(path.name))
    loc = mount(str(path))
    try:
        same_tree(r, loc)
        st = remote_stats(r)
        assert st["requests"] > 0 and st["failures"] == 0, st
    finally:
        r.stop()
        loc.stop()


@need_fuse
@pytest.mark.parametrize("key", [f"h5ad/{p.name}" for p in H5AD] + [f"zarr/{n}/" for n in ZARRS])
def test_s3_equals_local(s3, key):
    env, _ = s3
    local = FIXTURES / key.split("/", 1)[1] if key.startswith("h5ad/") else ZARR / key.split("/")[1]
    if key.startswith("zarr/") and not consolidated(key.split("/")[1]):
        return unconsolidated_fails(f"s3://atlas/{key}", env)
    r = mount(f"s3://atlas/{key}", env=env)
    loc = mount(str(local))
    try:
        remote_zarr_equals_local(r, loc) if key.startswith("zarr/") else same_tree(r, loc)
    finally:
        r.stop()
        loc.stop()


@need_fuse
@pytest.mark.parametrize("name", ZARRS)
def test_http_zarr_equals_local(http_fixtures, name):
    if not consolidated(name):
        return unconsolidated_fails(http_fixtures.url(f"zarr/{name}"), None)
    r = mount(http_fixtures.url(f"zarr/{name}"))
    loc = mount(str(ZARR / name))
    try:
        remote_zarr_equals_local(r, loc)
    finally:
        r.stop()
        loc.stop()


@need_fuse
@pytest.mark.parametrize("rel", [p.name for p in H5AD] + [f"zarr/{n}" for n in ZARRS if consolidated(n)])
def test_nginx_equals_local(nginx_fixtures, rel):
    """Every fixture served by nginx (its own Range, ETag and keep-alive behaviour, not the test server's)
    renders byte for byte as the same store mounted from the local disk."""
    r = mount(nginx_fixtures.url(rel))
    loc = mount(str(FIXTURES / rel))
    try:
        remote_zarr_equals_local(r, loc) if rel.startswith("zarr/") else same_tree(r, loc)
        st = remote_stats(r)
        assert st["requests"] > 0 and st["failures"] == 0, st
    finally:
        r.stop()
        loc.stop()


@need_fuse
def test_s3_errors_name_the_url_and_cause(s3, tmp_path):
    env, _ = s3
    def run(url, *extra, env_over=None):
        e = dict(env, **(env_over or {}))
        return subprocess.run([str(ANNFS_BIN), "ls", url, *extra], capture_output=True, timeout=60, env=e)
    r = run("s3://atlas/h5ad/nope.h5ad")
    assert r.returncode != 0 and b"s3://atlas/h5ad/nope.h5ad" in r.stderr and b"not found" in r.stderr, r.stderr
    r = run("s3://no-such-bucket/x.h5ad")
    assert r.returncode != 0 and b"s3://no-such-bucket/x.h5ad" in r.stderr, r.stderr
    r = run("s3://atlas/zarr/nope.zarr/")
    assert r.returncode != 0 and b"no Zarr store" in r.stderr and b"nope.zarr" in r.stderr, r.stderr
    # A prefix that is not a store is a collection of the stores below it.
    r = run("s3://atlas/zarr/")
    assert r.returncode == 0 and b"dense_f32.v2.zarr/" in r.stdout, r.stderr
    s3[1].put_object(Bucket="atlas", Key="notes.txt", Body=b"not a store\n")
    r = run("s3://atlas/notes.txt")
    assert r.returncode != 0 and b"neither an HDF5 file nor a Zarr store" in r.stderr, r.stderr
    # Unsigned requests: a private object is access denied at mount; a public-read one is served.
    env_nocreds = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run([str(ANNFS_BIN), "mount", "s3://atlas/h5ad/dense_f32.h5ad", str(mnt), "--no-sign-request"],
                       capture_output=True, timeout=60, env=env_nocreds)
    assert r.returncode != 0 and b"access denied" in r.stderr and b"403" in r.stderr, r.stderr
    s3[1].put_object_acl(Bucket="atlas", Key="h5ad/dense_f32.h5ad", ACL="public-read")
    m = mount("s3://atlas/h5ad/dense_f32.h5ad", "--no-sign-request", env=env_nocreds)
    loc = mount(str(FIXTURES / "dense_f32.h5ad"))
    try:
        same_files(m, loc, ["X/dense.npy", "obs.tsv"])
    finally:
        m.stop()
        loc.stop()
    # The commands that read a store without mounting take the flag too.
    r = subprocess.run([str(ANNFS_BIN), "cat", "s3://atlas/h5ad/dense_f32.h5ad", "obs.tsv", "--no-sign-request"],
                       capture_output=True, timeout=60, env=env_nocreds)
    want = subprocess.run([str(ANNFS_BIN), "cat", str(FIXTURES / "dense_f32.h5ad"), "obs.tsv"], capture_output=True)
    assert r.returncode == 0 and r.stdout == want.stdout, r.stderr


def test_s3_settings_from_an_aws_profile(s3, tmp_path):
    """Endpoint, region and keys from a named profile of the shared config and credentials files (no AWS_* keys,
    region or endpoint in the environment): the store is found and read; an unknown profile is a clear error."""
    env, _ = s3
    endpoint = env["AWS_ENDPOINT_URL"]
    (tmp_path / "config").write_text(f"[default]\nregion = eu-north-1\n\n[profile lab]\nregion = us-east-1\n"
                                     f"endpoint_url = {endpoint}\n")
    (tmp_path / "credentials").write_text("[lab]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    clean = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    penv = dict(clean, AWS_PROFILE="lab", AWS_CONFIG_FILE=str(tmp_path / "config"), AWS_ALLOW_HTTP="true",
                AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"))
    for rel in ("X/dense.npy", "obs.tsv"):
        r = subprocess.run([str(ANNFS_BIN), "cat", "s3://atlas/h5ad/dense_f32.h5ad", rel], capture_output=True,
                           timeout=60, env=penv)
        assert r.returncode == 0, r.stderr
        want = subprocess.run([str(ANNFS_BIN), "cat", str(FIXTURES / "dense_f32.h5ad"), rel], capture_output=True)
        assert r.stdout == want.stdout and r.stdout, rel
    r = subprocess.run([str(ANNFS_BIN), "ls", "s3://atlas/h5ad/dense_f32.h5ad"], capture_output=True, timeout=60,
                       env=dict(penv, AWS_PROFILE="nope"))
    err = r.stderr.decode()
    assert r.returncode != 0 and "AWS profile 'nope'" in err and str(tmp_path / "config") in err, err
    assert err.count("\n") == 1, err


@need_fuse
@pytest.mark.parametrize("status", ["500", "503"])
def test_faults_are_retried_through(big, status):
    """Every 3rd GET fails with 500 (or 503 SlowDown, a throttling server) and every 5th body is cut short:
    reads retry and stay byte-identical."""
    srv = Server(big.parent, "--fail-every", "3", "--fail-status", status, "--truncate-every", "5")
    r = mount(srv.url(big.name), "--cache-size", "1M")
    loc = mount(str(big))
    try:
        same_files(r, loc)
        # Reads retried through the faults. (Concurrent GETs can land one fetch on four faults in a row; that
        # request then fails with EIO and the reader's next read retries — same_files reads to EOF, so it still
        # sees every byte.)
        assert remote_stats(r)["retries"] > 0
    finally:
        r.stop()
        loc.stop()
        srv.kill()


@need_fuse
def test_server_dies_then_recovers(big):
    srv = Server(big.parent)
    port = srv.port
    r = mount(srv.url(big.name), "--cache-size", "1M")
    loc = mount(str(big))
    try:
        srv.kill()
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            (r.mnt / "layers" / "dense" / "dense.npy").read_bytes()
        assert e.value.errno == errno.EIO
        assert time.monotonic() - t0 < 30, "a failed read must not hang"
        assert is_mounted(r.mnt) and r.proc.poll() is None
        srv = Server(big.parent, port=port)
        # Nothing keeps the transient error: the next reads succeed.
        same_files(r, loc)
    finally:
        r.stop()
        loc.stop()
        srv.kill()


def _sharded_zarr(path: Path, n: int, inner: int):
    """An AnnData Zarr v3 store whose `X/data` is one shard of `n` float32 values in inner chunks of `inner`
    (the rest as anndata writes it). Returns the values."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp
    import zarr
    rng = np.random.default_rng(11)
    rows = n // 100
    x = sp.csr_matrix((rng.integers(1, 1000, n).astype(np.float32), np.tile(np.arange(100, dtype=np.int32), rows),
                       np.arange(rows + 1, dtype=np.int64) * 100), shape=(rows, 100))
    fmt = ad.settings.zarr_write_format
    try:
        ad.settings.zarr_write_format = 3
        ad.AnnData(X=x).write_zarr(path)
    finally:
        ad.settings.zarr_write_format = fmt
    zarr.create_array(str(path), name="X/data", data=x.data, chunks=(inner,), shards=(n,), overwrite=True)
    zarr.consolidate_metadata(str(path))
    return x.data


@need_fuse
def test_sharded_zarr_over_http_reads_runs_of_inner_chunks(tmp_path):
    """A sequential read of a sharded array over HTTP fetches neighbouring inner chunks together (runs of
    blocks read ahead, as for an h5ad), not with one GET each — and reads the same values."""
    import numpy as np
    root = tmp_path / "www"
    root.mkdir()
    n, inner = 1_000_000, 10_000
    want = _sharded_zarr(root / "s.zarr", n, inner)
    log = tmp_path / "requests.log"
    srv = Server(root, log=log)
    r = mount(srv.url("s.zarr"))
    try:
        got = np.load(r.mnt / "X" / "csr" / "data.npy")
        assert np.array_equal(got, want)
        gets = [ln for ln in log.read_text().splitlines() if ln.startswith("GET ") and "/X/data/c/" in ln]
        # 100 inner chunks (40 KB each) in one 4 MB shard: a GET per inner chunk would be 100.
        assert 0 < len(gets) <= 12, gets
    finally:
        r.stop()
        srv.kill()


@need_fuse
@pytest.mark.parametrize("server", ["range_server", "nginx"])
def test_object_replaced_under_the_mount_is_never_mixed(tmp_path, big, server):
    if server == "nginx" and not Nginx.available():
        pytest.skip("nginx is not installed")
    root = tmp_path / "srv"
    root.mkdir()
    shutil.copy(big, root / "a.h5ad")
    srv = Server(root) if server == "range_server" else Nginx(root)
    r = mount(srv.url("a.h5ad"), "--cache-size", "1M")
    try:
        shutil.copy(big, root / "a.h5ad.new")  # same bytes, new version
        # nginx's ETag is the mtime in seconds and the size: a later mtime makes the new version.
        st = os.stat(root / "a.h5ad")
        os.utime(root / "a.h5ad.new", (st.st_atime + 10, st.st_mtime + 10))
        os.replace(root / "a.h5ad.new", root / "a.h5ad")
        with pytest.raises(OSError) as e:
            (r.mnt / "layers" / "dense" / "dense.npy").read_bytes()
        assert e.value.errno == errno.EIO
        assert r.proc.poll() is None and is_mounted(r.mnt)
        assert "changed under the mount" in r.stderr()
    finally:
        r.stop()
        srv.kill()


@need_fuse
def test_disk_cache_second_mount_sends_no_data_requests(tmp_path, big):
    log = tmp_path / "requests.log"
    srv = Server(big.parent, log=log)
    path = big
    cache = tmp_path / "dcache"
    files = BIG_FILES
    try:
        got = []
        for round_ in range(2):
            r = mount(srv.url(path.name), "--disk-cache", str(cache), "--cache-size", "4M")
            try:
                got.append([(r.mnt / f).read_bytes() for f in files])
            finally:
                r.stop()
            lines = log.read_text().splitlines()
            gets = [ln for ln in lines if ln.startswith("GET ")]
            if round_ == 0:
                assert gets
                log.write_text("")
            else:
                assert not gets, f"second mount fetched data: {gets[:5]}"
                assert any(ln.startswith("HEAD ") for ln in lines), "no freshness check"
        assert got[0] == got[1]
        loc = mount(str(path))
        try:
            assert got[0] == [(loc.mnt / f).read_bytes() for f in files]
        finally:
            loc.stop()
    finally:
        srv.kill()


@need_fuse
def test_http_errors_at_mount(tmp_path, http_fixtures):
    def ls(url):
        return subprocess.run([str(ANNFS_BIN), "ls", url], capture_output=True, timeout=60)
    r = ls(http_fixtures.url("nope.h5ad"))
    assert r.returncode != 0 and b"nope.h5ad" in r.stderr and b"404" in r.stderr, r.stderr
    r = ls(http_fixtures.url("SOURCES.md"))
    assert r.returncode != 0 and b"neither an HDF5 file nor a Zarr store" in r.stderr, r.stderr
    srv = Server(FIXTURES, "--forbid")
    try:
        r = ls(srv.url("dense_f32.h5ad"))
        assert r.returncode != 0 and b"access denied" in r.stderr and b"403" in r.stderr, r.stderr
    finally:
        srv.kill()


@need_fuse
def test_s3_prefix_is_a_collection(s3, tmp_path):
    """`s3://bucket/prefix/` mounts as a collection, like the same layout in a local directory: .h5ad objects and
    `*.zarr` prefixes are stores, other prefixes directories, other objects hidden."""
    env, client = s3
    local = collection_layout(tmp_path / "coll")
    for f in local.rglob("*"):
        if f.is_file():
            client.upload_file(str(f), "atlas", f"coll/{f.relative_to(local).as_posix()}")
    same_collection("s3://atlas/coll/", local, env)


def _write_zarr_csr(path: Path, seed: int):
    """Writes a 300 x 40 CSR AnnData as Zarr at `path` (replacing it); returns X as a dense array."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    x = sp.random(300, 40, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    shutil.rmtree(path, ignore_errors=True)
    ad.AnnData(X=x).write_zarr(path)
    return x.toarray()


@need_fuse
def test_remote_zarr_index_is_keyed_by_its_metadata_version(tmp_path):
    """A remote Zarr store's gene-column index is keyed by the version of its consolidated metadata (which every
    write rewrites): `annfs index URL` builds it once, and a store rewritten under the same URL gets a new index,
    never the old one."""
    import numpy as np
    store = tmp_path / "www" / "s.zarr"
    store.parent.mkdir()
    first = _write_zarr_csr(store, 1)
    srv = Server(store.parent)
    idx = tmp_path / "idx"
    index = lambda: subprocess.run([str(ANNFS_BIN), "index", srv.url("s.zarr"), "--index-dir", str(idx)],
                                   capture_output=True, text=True, timeout=120)
    try:
        r = index()
        assert r.returncode == 0 and "1 built, 0 up to date" in r.stderr, r.stderr
        r = index()
        assert r.returncode == 0 and "0 built, 1 up to date" in r.stderr, r.stderr
        m = mount(srv.url("s.zarr"), "--index-dir", str(idx))
        try:
            assert np.array_equal(np.load(m.mnt / "X/cols/7.npy"), first[:, 7])
        finally:
            m.stop()
        time.sleep(0.01)
        second = _write_zarr_csr(store, 2)
        assert not np.array_equal(first, second)
        m = mount(srv.url("s.zarr"), "--index-dir", str(idx), "--index-wait", "60")
        try:
            for j in (0, 7, 39):
                assert np.array_equal(np.load(m.mnt / f"X/cols/{j}.npy"), second[:, j]), j
            assert "stale" in m.stderr(), m.stderr()
        finally:
            m.stop()
    finally:
        srv.kill()
