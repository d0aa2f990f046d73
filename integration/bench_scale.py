"""The --scale mode of integration/bench.py: issue 9's table at atlas scale (plus issue 12's where/ subset and
collection listing rows), each row against its in-process peer
(h5py / anndata backed / zarr-python / local .npy, same data) or the same daemon's FUSE ceiling, in one run.

Every annfs measurement runs on a fresh mount with an empty --cache-dir; as root the OS page cache is dropped
(sync; echo 3 > /proc/sys/vm/drop_caches) before each cold measurement of either side, so "first read" means
the same for annfs and the peer. Each value is the median of --reps runs; VmHWM is the daemon's peak over the
mounts of that row. See bench.py's docstring for the command and the rows.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench_stores import write_gzip_h5ad, write_scale_h5ad, write_zarr_variants
from bench_util import BIN, MIB, Mount, Row, drop_caches, mbps, parse_size, read_seq
from servers import Nginx

GB = 10 ** 9
CSR = ("data", "indices", "indptr")


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def _threads(n: int, work) -> float:
    """Run work(i) for i in range(n) in n threads started together; wall seconds."""
    barrier = threading.Barrier(n + 1)
    errors: list[BaseException] = []

    def run(i):
        barrier.wait()
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def warm_file(path: Path) -> None:
    """Reads `path` once so it sits in the OS page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


class Scale:
    """Runs the workloads; `rows` collects the table."""

    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.reps = args.reps
        self.rows: list[Row] = []
        self.rng = np.random.default_rng(42)

    # ---------------------------------------------------------------------------------------------------------
    # plumbing
    # ---------------------------------------------------------------------------------------------------------

    @contextmanager
    def mount(self, store, hwm: list[float], zero: str | None = None, extra: tuple[str, ...] = ()):
        """A fresh mount (empty --cache-dir), after dropping the page cache; its VmHWM goes to `hwm`."""
        with tempfile.TemporaryDirectory(prefix="annfs-bench-") as d:
            mnt = Path(d) / "m"
            mnt.mkdir()
            drop_caches()
            m = Mount(store, mnt, self.args.cache_size, zero=zero, cache_dir=Path(d) / "cache", extra=extra)
            try:
                yield m
            finally:
                hwm.append(m.peak_rss_kib() / 1024)
                m.close()

    def paired(self, name: str, kind: str, ours, peer, target: float, peer_what: str, store=None,
               zero: str | None = None, extra: tuple[str, ...] = ()) -> Row:
        """Median of reps of ours(mount) (on a fresh cold mount, `extra` its added options) and of peer() (after a
        cache drop); `peer` may also be a number measured once (the ceiling) or None."""
        a, p, hwm = [], [], []
        for _ in range(self.reps):
            with self.mount(store or self.store, hwm, zero, extra) as m:
                a.append(ours(m))
            if callable(peer):
                drop_caches()
                p.append(peer())
            elif peer is not None:
                p.append(peer)
        row = Row(name, kind, _median(a), _median(p) if p else None, peer_what, target, max(hwm))
        self.rows.append(row)
        print(f"  {name}: annfs {a} peer {p} VmHWM {max(hwm):.0f} MiB", file=sys.stderr, flush=True)
        return row

    def backed(self, store: Path):
        """anndata backed mode; a fresh handle per measurement (its caches would otherwise carry over)."""
        import anndata as ad
        return ad.read_h5ad(store, backed="r")

    # ---------------------------------------------------------------------------------------------------------
    # workloads
    # ---------------------------------------------------------------------------------------------------------

    GROUPS = ("mount", "random", "block", "obsm", "seq", "two", "training", "threads", "text", "where", "collection",
              "gzip", "zarr")

    def run(self) -> list[Row]:
        a = self.args
        only = set(a.only.split(",")) if a.only else set(self.GROUPS)
        unknown = only - set(self.GROUPS)
        if unknown:
            raise SystemExit(f"--only: unknown group(s) {sorted(unknown)}; known: {', '.join(self.GROUPS)}")
        self.store = write_scale_h5ad(self.work / f"scale-{a.cells}x{a.genes}-{a.density}.h5ad",
                                      a.cells, a.genes, a.density)
        steps = {
            "mount": self.mount_open, "random": self.random_rows,
            "block": lambda: self.block(self.store, a.cells, ""), "obsm": self.obsm_first_read,
            "seq": self.sequential, "two": self.two_readers, "training": self.training_batches,
            "threads": self.threaded_rows, "text": self.text_views, "where": self.where_subset,
            "collection": self.collection_listing, "gzip": self.gzip_block, "zarr": self.zarr,
        }
        for name in self.GROUPS:
            if name in only:
                steps[name]()
        return self.rows

    def gzip_block(self) -> None:
        a = self.args
        if a.gzip_cells:
            gz = write_gzip_h5ad(self.work / f"gzip-{a.gzip_cells}x{a.genes}-0.05.h5ad", a.gzip_cells, a.genes, 0.05)
            self.block(gz, a.gzip_cells, " (gzip store)")

    def mount_open(self) -> None:
        def peer():
            t0 = time.perf_counter()
            ad = self.backed(self.store)
            t = time.perf_counter() - t0
            ad.file.close()
            return t
        self.paired("mount / open", "time", lambda m: m.ready_secs, peer, 1.0,
                    "anndata.read_h5ad(backed='r')")

    def _backed_timed(self, store: Path, work) -> float:
        """Seconds of work(X) on a freshly opened backed AnnData (opening not timed, like mounting)."""
        ad = self.backed(store)
        try:
            t0 = time.perf_counter()
            work(ad.X)
            return time.perf_counter() - t0
        finally:
            ad.file.close()

    def random_rows(self) -> None:
        rows = self.rng.choice(self.args.cells, size=min(200, self.args.cells), replace=False)
        probe = int(rows[0])

        def ours(m):
            t0 = time.perf_counter()
            for i in rows:
                np.load(m.mnt / "X" / "rows" / f"{i}.npy")
            t = time.perf_counter() - t0
            got = np.load(m.mnt / "X" / "rows" / f"{probe}.npy")
            want = self.backed(self.store)
            try:
                assert np.array_equal(got, np.asarray(want.X[probe].toarray()).ravel()), "row mismatch"
            finally:
                want.file.close()
            return t

        def peer():
            return self._backed_timed(self.store, lambda x: [x[int(i)].toarray() for i in rows])
        self.paired(f"{len(rows)} random rows X/rows/I.npy", "time", ours, peer, 5.0,
                    "backed X[i].toarray() per row")

    def block(self, store: Path, cells: int, label: str) -> None:
        lo = int(cells * 0.4)
        hi = min(cells, lo + 20000)

        def ours(m):
            t0 = time.perf_counter()
            got = np.load(m.mnt / "X" / "rows" / f"{lo}:{hi}.npy")
            t = time.perf_counter() - t0
            assert got.shape == (hi - lo, self.args.genes), got.shape
            return t

        self.paired(f"X/rows/{lo}:{hi}.npy{label}", "time", ours,
                    lambda: self._backed_timed(store, lambda x: x[lo:hi].toarray()), 1.5,
                    "backed X[a:b].toarray()", store=store)

    def obsm_first_read(self) -> None:
        import h5py
        for key in ("X_umap", "X_pca"):
            def ours(m, key=key):
                t0 = time.perf_counter()
                np.load(m.mnt / "obsm" / f"{key}.npy")
                return time.perf_counter() - t0

            def peer(key=key):
                with h5py.File(self.store, "r") as f:
                    t0 = time.perf_counter()
                    f[f"obsm/{key}"][:]
                    return time.perf_counter() - t0
            self.paired(f"obsm/{key}.npy first read (numpy.load)", "time", ours, peer, 1.0, "h5py [:]")

    def sequential(self) -> None:
        """dd bs=1M of each binary view as a share of the FUSE ceiling: on the same fresh mount, first the same
        number of bytes of the daemon's zero file, then the view (so load on the machine hits both alike)."""
        a = self.args
        dense = a.cells * a.genes * 4
        first = min(dense, parse_size(a.seq_bytes))
        zero = str(dense if a.full else first)
        files = [("X/dense.npy", first, f"X/dense.npy first {first / GB:.1f} GB (dd bs=1M)")]
        if a.full:
            files.append(("X/dense.npy", None, f"X/dense.npy all {dense / GB:.1f} GB (dd bs=1M)"))
        files += [(f"X/csr/{k}.npy", None, f"X/csr/{k}.npy (dd bs=1M)") for k in CSR]
        files += [(f"obsm/{k}.npy", None, f"obsm/{k}.npy (dd bs=1M)") for k in ("X_pca", "X_umap")]
        for i, (rel, limit, name) in enumerate(files):
            ours, ceil, hwm = [], [], []
            for _ in range(self.reps):
                with self.mount(self.store, hwm, zero=zero) as m:
                    # The ceiling involves no disk: measure annfs's own path with the store file in the OS
                    # page cache (annfs's cache is cold: a fresh mount). Cold-disk first reads are the
                    # obsm rows above, against h5py on the same cold disk.
                    warm_file(self.store)
                    size = m.mnt.joinpath(rel).stat().st_size
                    n = size if limit is None else min(size, limit)
                    ceil.append(mbps(*read_seq(m.mnt / ".annfs" / "zero", limit=n)))
                    ours.append(mbps(*read_seq(m.mnt / rel, limit=n)))
            row = Row(name, "rate", _median(ours), _median(ceil), "ceiling: same bytes of .annfs/zero, same mount",
                      0.7, max(hwm))
            if i == 0:
                row.notes.append("ratio = share of the ceiling (VmHWM includes the zero-file read); store file in the "
                                 "OS page cache, fresh mount")
            self.rows.append(row)
            print(f"  {name}: annfs {ours} ceiling {ceil} VmHWM {max(hwm):.0f} MiB", file=sys.stderr, flush=True)

    def two_readers(self) -> None:
        a = self.args
        span = max(1, min(a.cells // 4, (512 * MIB) // (a.genes * 4)))
        half = a.cells // 2
        files = [f"X/rows/0:{span}.npy", f"X/rows/{half}:{half + span}.npy"]
        hwm: list[float] = []
        single, both = [], []
        for _ in range(self.reps):
            with self.mount(self.store, hwm) as m:
                single.append(mbps(*read_seq(m.mnt / files[0])))
            with self.mount(self.store, hwm) as m:
                sizes = [0, 0]

                def work(i, m=m):
                    sizes[i] = read_seq(m.mnt / files[i])[0]
                t = _threads(2, work)
                both.append(mbps(sum(sizes), t))
        row = Row("2 concurrent readers (X/rows blocks)", "rate", _median(both), _median(single),
                  f"one reader of X/rows/0:{span}.npy", 1.6, max(hwm),
                  [f"files {files[0]} + {files[1]}, {span * a.genes * 4 / 1e6:.0f} MB each"])
        self.rows.append(row)
        print(f"  two readers {both} vs one {single}", file=sys.stderr, flush=True)

    def _local_csr(self) -> Path:
        """X/csr/*.npy copied once out of a mount into the work dir (same bytes, local disk)."""
        d = self.work / f"local-csr-{self.args.cells}x{self.args.genes}-{self.args.density}"
        if not (d / "indptr.npy").exists():
            d.mkdir(parents=True, exist_ok=True)
            with self.mount(self.store, []) as m:
                for k in CSR:
                    shutil.copyfile(m.mnt / "X" / "csr" / f"{k}.npy", d / f"{k}.npy.partial")
            for k in CSR:
                (d / f"{k}.npy.partial").rename(d / f"{k}.npy")
        return d

    def training_batches(self) -> None:
        a = self.args
        batches = self.rng.integers(0, a.cells, size=(a.batches, 64))
        local = self._local_csr()

        def run(root: Path) -> float:
            t0 = time.perf_counter()
            data, ind, ptr = (np.load(root / f"{k}.npy", mmap_mode="r") for k in CSR)
            out = np.zeros((64, a.genes), dtype=data.dtype)
            for batch in batches:
                out[:] = 0
                for j, r in enumerate(batch):
                    s, e = int(ptr[r]), int(ptr[r + 1])
                    out[j, ind[s:e]] = data[s:e]
            return time.perf_counter() - t0
        self.paired(f"training: {a.batches} batches x 64 random rows", "time", lambda m: run(m.mnt / "X" / "csr"),
                    lambda: run(local), 0.5, "same X/csr/*.npy as local files")
        self.rows[-1].notes.append("numpy.load(mmap_mode='r') of data/indices/indptr, first pass")

    def threaded_rows(self) -> None:
        n = min(400, self.args.cells)
        rows = self.rng.choice(self.args.cells, size=n, replace=False)
        parts = np.array_split(rows, 8)

        def ours(m):
            return _threads(8, lambda i: [np.load(m.mnt / "X" / "rows" / f"{r}.npy") for r in parts[i]])

        def peer():
            handles = [self.backed(self.store) for _ in range(8)]
            try:
                return _threads(8, lambda i: [handles[i].X[int(r)].toarray() for r in parts[i]])
            finally:
                for h in handles:
                    h.file.close()
        self.paired(f"8 threads x {n // 8} random rows", "time", ours, peer, 5.0,
                    "8 threads, backed X[i].toarray()")

    def text_views(self) -> None:
        def timed(cmd):
            def ours(m):
                t0 = time.perf_counter()
                subprocess.run([c.replace("@", str(m.mnt)) for c in cmd], check=True, stdout=subprocess.DEVNULL)
                return time.perf_counter() - t0
            return ours
        self.paired("head -3 obs.tsv (cold)", "limit", timed(["head", "-3", "@/obs.tsv"]), None, 0.1, "-")
        self.paired("ls -l X/ (cold, empty --cache-dir)", "limit", timed(["ls", "-l", "@/X"]), None, 2.0, "-")
        # The same on mounts of an index directory `annfs index` prepared (a cluster's shared one): the sizes of
        # the text views are read, not computed.
        idx = self.work / "idx-sizes"
        shutil.rmtree(idx, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([str(BIN), "index", str(self.store), "--index-dir", str(idx), "--cache-size", self.args.cache_size],
                       check=True, capture_output=True)
        print(f"  annfs index (transposed index and text sizes): {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        extra = ("--index-dir", str(idx))
        self.paired("head -3 obs.tsv (cold, sizes from annfs index)", "limit", timed(["head", "-3", "@/obs.tsv"]), None,
                    0.1, "-", extra=extra)
        self.paired("ls -l X/ obsm/ (cold, sizes from annfs index)", "limit", timed(["ls", "-l", "@/X", "@/obsm"]), None,
                    2.0, "-", extra=extra)

    def where_subset(self) -> None:
        """Issue 12's row: one cell type's dense matrix, as a path, against anndata's boolean-mask subset."""
        ct = "type_07"

        def mask_of(a):
            return (a.obs["cell_type"] == ct).to_numpy()

        def ours(m):
            t0 = time.perf_counter()
            got = np.load(m.mnt / "where" / f"cell_type={ct}" / "X" / "dense.npy")
            t = time.perf_counter() - t0
            want = self.backed(self.store)
            try:
                mask = mask_of(want)
                assert got.shape == (int(mask.sum()), self.args.genes), got.shape
                probe = int(np.flatnonzero(mask)[len(got) // 2])
                assert np.array_equal(got[len(got) // 2], np.asarray(want.X[probe].toarray()).ravel()), "row mismatch"
            finally:
                want.file.close()
            return t

        def peer():
            a = self.backed(self.store)
            try:
                t0 = time.perf_counter()
                a[mask_of(a)].X.toarray()
                return time.perf_counter() - t0
            finally:
                a.file.close()
        self.paired(f"where/cell_type={ct}/X/dense.npy", "time", ours, peer, 2.0,
                    "backed adata[mask].X.toarray()")

    def collection_listing(self) -> None:
        """Issue 12's row: `ls` of a collection of 10,000 stores (hard links of one small store), opening none."""
        src = self.work / "collection-10000"
        one = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "empty_obs_no_x.h5ad"
        if not (src / "s09999.h5ad").exists():
            src.mkdir(exist_ok=True)
            for i in range(10000):
                p = src / f"s{i:05d}.h5ad"
                if not p.exists():
                    os.link(one, p) if os.stat(one).st_dev == os.stat(src).st_dev else shutil.copyfile(one, p)

        def timed(cmd):
            def ours(m):
                t0 = time.perf_counter()
                out = subprocess.run(cmd + [str(m.mnt)], check=True, capture_output=True).stdout
                t = time.perf_counter() - t0
                assert out.count(b"\n") >= 10000, out[-200:]
                stats = json.loads((m.mnt / ".annfs" / "stats.json").read_bytes())
                assert stats["stores_opened"] == 0, stats
                return t
            return ours
        self.paired("ls of a 10,000-store collection", "limit", timed(["ls"]), None, 1.0, "-", store=src)
        self.paired("ls -l of a 10,000-store collection", "limit", timed(["ls", "-l"]), None, 1.0, "-", store=src)

    def zarr(self) -> None:
        import zarr
        a = self.args
        if not a.zarr_cells:
            return
        paths = write_zarr_variants(self.work, a.zarr_cells, a.genes, a.density)
        csr_files = [f"X/csr/{k}.npy" for k in CSR]
        csr_keys = [f"X/{k}" for k in CSR]

        def ours(files):
            def f(m):
                t0 = time.perf_counter()
                n = sum(np.load(m.mnt / p).nbytes for p in files)
                return mbps(n, time.perf_counter() - t0)
            return f

        def peer(path, keys):
            def f():
                g = zarr.open_group(str(path), mode="r")
                t0 = time.perf_counter()
                n = sum(g[k][...].nbytes for k in keys)
                return mbps(n, time.perf_counter() - t0)
            return f

        what = f"zarr-python [...] ({a.zarr_cells} cells)"
        for variant, path in paths.items():
            self.paired(f"zarr {variant} X/csr/*.npy", "rate", ours(csr_files), peer(path, csr_keys), 1.0, what,
                        store=path)
            self.paired(f"zarr {variant} obsm/X_pca.npy", "rate", ours(["obsm/X_pca.npy"]),
                        peer(path, ["obsm/X_pca"]), 1.0, what, store=path)
        srv = subprocess.Popen([sys.executable, str(Path(__file__).with_name("range_server.py")), str(self.work)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            port = int(srv.stdout.readline().split()[1])
            url = f"http://127.0.0.1:{port}/{paths['v3s'].name}"
            local = "zarr-python reading the store locally"
            self.paired("http v3s X/csr/*.npy", "rate", ours(csr_files), peer(paths["v3s"], csr_keys), 0.7, local,
                        store=url)
            self.paired("http v3s obsm/X_pca.npy", "rate", ours(["obsm/X_pca.npy"]),
                        peer(paths["v3s"], ["obsm/X_pca"]), 0.7, local, store=url)
        finally:
            srv.kill()
            srv.wait()
        # The same over nginx, a real static server (the Python test server above spends the same two cores
        # on every GET that the daemon and the reader need).
        if not Nginx.available():
            print("  nginx not installed: no nginx rows", file=sys.stderr)
            return
        ngx = Nginx(self.work)
        try:
            url = ngx.url(paths["v3s"].name)
            local = "zarr-python reading the store locally"
            self.paired("http (nginx) v3s X/csr/*.npy", "rate", ours(csr_files), peer(paths["v3s"], csr_keys), 0.7,
                        local, store=url)
            self.paired("http (nginx) v3s obsm/X_pca.npy", "rate", ours(["obsm/X_pca.npy"]),
                        peer(paths["v3s"], ["obsm/X_pca"]), 0.7, local, store=url)
        finally:
            ngx.kill()
