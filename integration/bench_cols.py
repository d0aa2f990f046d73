#!/usr/bin/env python3
"""Gene-column benchmark (issue 10): ratios in one run, on a CSR float32 store written by anndata with its defaults.

Rows:
  one gene       cols/J.npy (index built, column not read before;    vs  anndata backed X[:, j].toarray()
                 a fresh mount over the index after the build)
                 (median of 15 genes each)
  one gene       genes/NAME.npy (median of 15)                       vs  the same
  20 genes       cols/J.npy one after another                        vs  backed X[:, j].toarray() x 20
  index build    first read of cols/ in a fresh mount (build + read)  vs  one sequential read of X/csr/*.npy
  annfs index    the CLI build, same budget                           vs  the same sequential read
  memory         daemon VmHWM after all of the above                  vs  --cache-size + 64 MiB

Usage: bench_cols.py [--cells 1000000] [--genes 2000] [--density 0.02] [--cache 256M] [--work DIR]
                     [--vm-memory-as-is]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("ANNFS_BIN", REPO / "target" / "release" / "annfs"))


def make_store(path: Path, cells: int, genes: int, density: float) -> None:
    """CSR float32 X with sorted indices, uncompressed (anndata's default), obs/var names."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    per_row = max(1, int(genes * density))
    indptr = np.arange(cells + 1, dtype=np.int64) * per_row
    indices = np.empty(cells * per_row, dtype=np.int32)
    step = 5_000
    for r0 in range(0, cells, step):
        r1 = min(cells, r0 + step)
        pick = np.sort(rng.random((r1 - r0, genes)).argpartition(per_row, axis=1)[:, :per_row], axis=1)
        indices[r0 * per_row:r1 * per_row] = pick.ravel()
    data = rng.integers(1, 50, size=indices.size).astype(np.float32)
    X = sp.csr_matrix((data, indices, indptr.astype(np.int32)), shape=(cells, genes))
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"cell{i}" for i in range(cells)]),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(genes)]))
    a.write_h5ad(path)


class Mount:
    def __init__(self, store: Path, mnt: Path, cache: str, index_dir: Path, zero: int = 0):
        self.mnt = mnt
        mnt.mkdir(parents=True, exist_ok=True)
        # With `zero`, the same mount adds `.annfs/zero` of that many bytes (a FUSE ceiling).
        command = ["bench-mount", "--zero-file", str(zero)] if zero else ["mount"]
        self.proc = subprocess.Popen([str(BIN), *command, str(store), str(mnt), "--cache-size", cache, "--log-level", "warn",
                                      "--index-dir", str(index_dir), "--index-wait", "600"], stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not (mnt / "README.txt").exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mount failed: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            time.sleep(0.05)

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def read_seq(paths) -> float:
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--cache", default="256M")
    ap.add_argument("--work", type=Path, default=Path("/tmp/annfs-bench-cols"))
    ap.add_argument("--vm-memory-as-is", action="store_true",
                    help="leave a VM's free-page reporting alone (see bench_util.steady_vm_memory)")
    a = ap.parse_args()
    from bench_util import steady_vm_memory
    with contextlib.nullcontext("VM memory left as it is") if a.vm_memory_as_is else steady_vm_memory() as vm:
        return run(a, vm)


def run(a: argparse.Namespace, vm: str) -> int:
    """Every row of the table, printed."""
    warnings.simplefilter("ignore")
    import anndata as ad

    a.work.mkdir(parents=True, exist_ok=True)
    store = a.work / f"csr_{a.cells}x{a.genes}_{a.density}.h5ad"
    if not store.exists():
        t, _ = timed(lambda: make_store(store, a.cells, a.genes, a.density))
        print(f"wrote {store} in {t:.1f} s")
    budget_mib = int(a.cache.rstrip("MmBb")) if a.cache[-1] in "Mm" else None
    rng = np.random.default_rng(1)
    # 15 genes per one-gene row: a median of 5 moved with a single slow read of this shared host.
    genes = [int(g) for g in rng.choice(a.genes, 51, replace=False)]
    ones, by_name, twenty, first = genes[:15], genes[15:30], genes[30:50], genes[50]

    backed = ad.read_h5ad(store, backed="r")
    backed.X[:, first].toarray()  # open the datasets
    peer = [timed(lambda: backed.X[:, j].toarray().ravel()) for j in ones]
    peer_one = float(np.median([t for t, _ in peer]))
    peer_20, _ = timed(lambda: [backed.X[:, j].toarray() for j in twenty])
    refs = {j: v for j, (_, v) in zip(ones, peer)}
    refs.update({j: backed.X[:, j].toarray().ravel() for j in by_name})
    backed.file.close()

    rows = []
    for d in ("idx-seq", "idx-mount", "idx-cli", "mnt-seq", "mnt"):
        shutil.rmtree(a.work / d, ignore_errors=True)
    # One sequential read of the stored CSR arrays through a mount.
    m = Mount(store, a.work / "mnt-seq", a.cache, a.work / "idx-seq")
    try:
        seq = read_seq([m.mnt / "X/csr" / f"{k}.npy" for k in ("data", "indices", "indptr")])
    finally:
        m.close()
    # The CLI build.
    r = subprocess.run([str(BIN), "index", str(store), "--index-dir", str(a.work / "idx-cli"), "--cache-size", a.cache],
                       capture_output=True, text=True)
    # The build's own time ("X: built in T s, ..."; the command then sizes the text views).
    built = re.search(r"^X: built in ([0-9.]+) s", r.stderr, re.M) if r.returncode == 0 else None
    cli = float(built.group(1)) if built else float("nan")
    # A fresh mount: the first column read builds the index. Its `.annfs/zero` is as long as a
    # column file: reading it is what FUSE alone costs for one column on this machine.
    col_bytes = 128 + 4 * a.cells
    m = Mount(store, a.work / "mnt", a.cache, a.work / "idx-mount", zero=col_bytes)
    try:
        build, _ = timed(lambda: np.load(m.mnt / f"X/cols/{first}.npy"))
        assert (m.mnt / f"X/cols/{first}.npy").stat().st_size == col_bytes
        hwm = m.peak_rss_mib()
    finally:
        m.close()
    # Genes are read with the index built, as a user reads them: a fresh mount over the index, once the build's
    # 300 MB are on disk (read in the building mount, the disk's write-back of the index made reads 2x slower).
    os.sync()
    m = Mount(store, a.work / "mnt", a.cache, a.work / "idx-mount", zero=col_bytes)
    try:
        np.load(m.mnt / f"X/cols/{first}.npy")  # the mount opens and checks the index on first use
        ceiling = float(np.median([timed(lambda: np.fromfile(m.mnt / ".annfs" / "zero", dtype=np.uint8))[0]
                                   for _ in range(9)]))
        ts = []
        for j in ones:
            t, got = timed(lambda: np.load(m.mnt / f"X/cols/{j}.npy"))
            assert np.array_equal(got, refs[j]), "cols/J.npy differs from anndata"
            ts.append(t)
        t1 = float(np.median(ts))
        ts = []
        for j in by_name:
            t, got = timed(lambda: np.load(m.mnt / f"X/genes/g{j}.npy"))
            assert np.array_equal(got, refs[j]), "genes/NAME.npy differs from anndata"
            ts.append(t)
        tn = float(np.median(ts))
        t20, _ = timed(lambda: [np.load(m.mnt / f"X/cols/{j}.npy") for j in twenty])
        hwm = max(hwm, m.peak_rss_mib())
    finally:
        m.close()

    rows.append(("one gene cols/J.npy (index built, median)", t1, "anndata backed X[:, j].toarray()", peer_one, peer_one / t1))
    rows.append(("one gene genes/NAME.npy (median)", tn, "anndata backed X[:, j].toarray()", peer_one, peer_one / tn))
    rows.append(("20 genes cols/J.npy in a row", t20, "anndata backed x 20", peer_20, peer_20 / t20))
    rows.append(("FUSE ceiling: a column's bytes of .annfs/zero", ceiling, "anndata backed X[:, j].toarray()", peer_one,
                 peer_one / ceiling))
    rows.append(("index build in a mount (1st cols/ read)", build, "sequential read of X/csr/*.npy", seq, build / seq))
    rows.append(("annfs index (CLI)", cli, "sequential read of X/csr/*.npy", seq, cli / seq))
    print(f"\nstore: {a.cells} x {a.genes} CSR float32, density {a.density}, --cache-size {a.cache}\n{vm}")
    print(f"{'task':44} {'annfs':>9}   {'peer':34} {'peer s':>8}  ratio")
    for name, t, peer, pt, ratio in rows:
        print(f"{name:44} {t:8.3f}s   {peer:34} {pt:7.3f}s  {ratio:7.1f}x")
    limit = f" (budget + 64 = {budget_mib + 64} MiB)" if budget_mib else ""
    print(f"daemon VmHWM: {hwm:.0f} MiB{limit}")
    print("(ratios: gene rows = peer / annfs, higher is better — the ceiling row is the most any file of a column's size can\n"
          " reach through this mount; build rows = build / sequential read, lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
