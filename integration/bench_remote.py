"""Remote-store benchmark (issue 11): the 1M-cell atlas-scale .h5ad served on loopback over HTTP
(integration/range_server.py with --latency 20 ms per request) and over S3 (moto's server), against the
in-process peer on the same URL (h5py over remfile, read through anndata's sparse_dataset, with the same latency)
and against the same daemon mounting the local file. Prints a table; never asserts on time.

    .venv/bin/python integration/bench_remote.py [--store PATH] [--latency-ms 20] [--cache-size 256M]
        [--seq-bytes 1G] [--s3 range|s3s|moto|none] [--s3-latency-ms MS] [--s3s-fs PATH] [--json out.json]

The S3 row runs against moto's server (--s3 moto, the default), `s3s-fs` (--s3 s3s: `cargo install
s3s-fs@0.14.1 --locked --features binary`, found on PATH or at --s3s-fs), or range_server.py answering S3's
path-style requests (--s3 range, with --s3-latency-ms per request). moto and s3s-fs do work proportional to the
whole object on every request (moto copies it, s3s-fs hashes it for the ETag), so on a large object the row
measures the server: use --s3-store with a smaller store (e.g. the 100k-cell one), or --s3 range, which reads only
the bytes asked for.

--store defaults to the --scale store of integration/bench.py (written by anndata with its defaults if missing).
Rows:
  mount (HTTP, 20 ms)            time until the mount answers; the request count from .annfs/stats.json   < 3 s
  200 random rows (HTTP, 20 ms)  X/rows/I.npy vs sparse_dataset(h5py.File(remfile.File(url))["X"])[i]    >= 5x
  seq X/dense.npy over S3        dd bs=1M of the first --seq-bytes vs the same mount of the local file     >= 50%
  second mount, --disk-cache     data GETs sent by a new mount re-reading what the first read              == 0
  8 concurrent readers (HTTP)    daemon VmHWM while 8 threads read rows and dense blocks      <= budget + 64 MiB
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_stores import write_scale_h5ad  # noqa: E402
from servers import RangeServer, free_port  # noqa: E402
from bench_util import MIB, Mount, Row, mbps, parse_size, read_seq, render_table, write_json  # noqa: E402


def stats(m: Mount) -> dict:
    return json.loads((m.mnt / ".annfs" / "stats.json").read_bytes())


def mount(store: str, cache: str, *extra: str, env: dict | None = None) -> tuple[Mount, tempfile.TemporaryDirectory]:
    d = tempfile.TemporaryDirectory(prefix="annfs-bench-remote-")
    mnt = Path(d.name) / "m"
    mnt.mkdir()
    old = dict(os.environ)
    if env:
        os.environ.update(env)
    try:
        m = Mount(store, mnt, cache, cache_dir=Path(d.name) / "cache", extra=extra)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return m, d


def start_s3(a, store: Path):
    """An S3 server on loopback with bucket `atlas` holding the store: (process, environment, temp dir)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "annfs", "AWS_SECRET_ACCESS_KEY": "annfs-bench",
           "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    if a.s3 == "range":
        # range_server.py answers S3's path-style HEAD, ranged GET and ListObjectsV2 (signatures unchecked)
        # reading only the bytes asked for, so the row measures annfs's S3 client, not the server.
        tmp = Path(tempfile.mkdtemp(dir=store.parent))
        (tmp / "atlas").mkdir()
        os.link(store, tmp / "atlas" / store.name)
        srv = RangeServer(tmp, "--latency", str(a.s3_latency_ms))
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{srv.port}"
        return srv.proc, env, tmp
    if a.s3 == "s3s":
        if not Path(a.s3s_fs).exists():
            print(f"no s3s-fs at {a.s3s_fs}: S3 row skipped", file=sys.stderr)
            return None
        tmp = Path(tempfile.mkdtemp(dir=store.parent))
        (tmp / "atlas").mkdir()
        os.link(store, tmp / "atlas" / store.name)
        proc = subprocess.Popen([a.s3s_fs, "--host", "127.0.0.1", "--port", str(port), "--access-key", "annfs",
                                 "--secret-key", "annfs-bench", str(tmp)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        return proc, env, tmp
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import boto3
    c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="annfs", aws_secret_access_key="annfs-bench",
                     region_name="us-east-1")
    for _ in range(100):
        try:
            c.create_bucket(Bucket="atlas")
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    c.upload_file(str(store), "atlas", store.name)
    return proc, env, None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "annfs-bench-scale")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--cache-size", default="256M")
    ap.add_argument("--seq-bytes", default="1G")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--s3", choices=("range", "s3s", "moto", "none"), default="moto")
    ap.add_argument("--s3-latency-ms", type=float, default=0.0, help="latency per request of --s3 range")
    ap.add_argument("--s3-store", type=Path, help="store for the S3 row (default --store); loopback S3 servers "
                    "hash or copy the whole object per request, so a smaller store keeps the row about annfs")
    ap.add_argument("--s3s-fs", default=shutil.which("s3s-fs") or "/work/tools/bin/s3s-fs")
    a = ap.parse_args()
    store = a.store or write_scale_h5ad(a.workdir / "scale-1000000x2000-0.02.h5ad", 1_000_000, 2000, 0.02)
    budget_mib = parse_size(a.cache_size) / MIB
    rows: list[Row] = []
    rng = np.random.default_rng(11)
    import h5py
    with h5py.File(store, "r") as f:
        n_obs = int(f["X"].attrs["shape"][0])
    picks = sorted(int(i) for i in rng.choice(n_obs, a.rows, replace=False))
    srv_log = Path(tempfile.mkdtemp()) / "requests.log"
    srv = RangeServer(store.parent, "--latency", str(a.latency_ms), log=srv_log)
    url = srv.url(store.name)
    try:
        # mount
        m, d = mount(url, a.cache_size)
        try:
            st = stats(m)["remote"]
            rows.append(Row(f"mount (HTTP, {a.latency_ms:g} ms/request)", "limit", m.ready_secs, None,
                            f"{st['requests']} requests, {st['bytes'] / MIB:.1f} MiB", 3.0, m.peak_rss_kib() / 1024))
            t0 = time.perf_counter()
            for i in picks:
                np.load(m.mnt / "X" / "rows" / f"{i}.npy")
            ours = time.perf_counter() - t0
            hwm = m.peak_rss_kib() / 1024
        finally:
            m.close()
            d.cleanup()
        import anndata as ad
        import remfile
        sparse_dataset = getattr(getattr(ad, "io", None), "sparse_dataset", None) or ad.experimental.sparse_dataset
        t0 = time.perf_counter()
        f = h5py.File(remfile.File(url), "r")
        X = sparse_dataset(f["X"])
        for i in picks:
            X[i].toarray()
        peer = time.perf_counter() - t0
        f.close()
        rows.append(Row(f"{a.rows} random rows X/rows/I.npy (HTTP)", "time", ours, peer,
                        "remfile+h5py sparse_dataset X[i] (same URL, latency)", 5.0, hwm))
        print(f"  rows: annfs {ours:.2f} s, peer {peer:.2f} s", file=sys.stderr, flush=True)

        # disk cache: the second mount re-reads the same rows and the first MiBs of X/dense.npy
        with tempfile.TemporaryDirectory() as dc:
            gets = []
            for _ in range(2):
                srv_log.write_text("")
                m, d = mount(url, a.cache_size, "--disk-cache", dc)
                try:
                    for i in picks[:50]:
                        np.load(m.mnt / "X" / "rows" / f"{i}.npy")
                    read_seq(m.mnt / "X" / "dense.npy", limit=64 * MIB)
                finally:
                    m.close()
                    d.cleanup()
                lines = srv_log.read_text().splitlines()
                gets.append(sum(ln.startswith("GET ") for ln in lines))
            rows.append(Row("second mount with --disk-cache: data GETs", "limit", gets[1], None,
                            f"first mount sent {gets[0]} GETs", 0.5))

        # 8 concurrent readers
        m, d = mount(url, a.cache_size)
        try:
            errs = []

            def reader(k: int):
                try:
                    r = np.random.default_rng(k)
                    for _ in range(20):
                        np.load(m.mnt / "X" / "rows" / f"{int(r.integers(n_obs))}.npy")
                    lo = int(r.integers(n_obs - 5000))
                    np.load(m.mnt / "X" / "rows" / f"{lo}:{lo + 5000}.npy")
                except Exception as e:  # noqa: BLE001
                    errs.append(e)
            ts = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            took = time.perf_counter() - t0
            rows.append(Row("8 concurrent readers (HTTP): wall time", "limit", took, None,
                            f"errors: {len(errs)}; VmHWM vs budget", 600.0, m.peak_rss_kib() / 1024))
        finally:
            m.close()
            d.cleanup()
    finally:
        srv.kill()

    # S3 sequential vs local
    s3_store = a.s3_store or store
    s3 = start_s3(a, s3_store) if a.s3 != "none" else None
    if s3 is not None:
        proc, env, tmp = s3
        try:
            limit = parse_size(a.seq_bytes)
            m, d = mount(f"s3://atlas/{s3_store.name}", a.cache_size, env=env)
            try:
                n, secs = read_seq(m.mnt / "X" / "dense.npy", limit=limit)
                s3_rate, hwm = mbps(n, secs), m.peak_rss_kib() / 1024
                s3_mount = m.ready_secs
            finally:
                m.close()
                d.cleanup()
            m, d = mount(str(s3_store), a.cache_size)
            try:
                n, secs = read_seq(m.mnt / "X" / "dense.npy", limit=limit)
                local_rate = mbps(n, secs)
            finally:
                m.close()
                d.cleanup()
            rows.append(Row(f"seq X/dense.npy over S3 ({a.s3}, {s3_store.stem[:18]}, {a.seq_bytes})", "rate",
                            s3_rate, local_rate,
                            f"same daemon, local file; S3 mount took {s3_mount:.2f} s", 0.5, hwm))
        finally:
            proc.kill()
            proc.wait()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
    print(render_table(rows, budget_mib))
    if a.json:
        write_json(a.json, {k: str(v) for k, v in vars(a).items()} | {"store": str(store)}, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
