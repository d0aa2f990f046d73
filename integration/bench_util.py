"""Helpers shared by integration/bench.py and its --scale workloads (integration/bench_scale.py) and by
integration/test_memory.py: a foreground mount with its readiness time and /proc status, dropping the OS page
cache, sequential dd-like reads, and the result table (text and JSON)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("ANNFS_BIN", REPO / "target" / "release" / "annfs"))
MIB = 1 << 20


def parse_size(s: str) -> int:
    """`256M`, `1G`, `512K` or plain bytes -> bytes."""
    s = s.strip().upper().rstrip("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def proc_status_kib(pid: int) -> dict[str, int]:
    """/proc/PID/status memory fields (VmHWM, VmRSS, RssAnon, RssFile, RssShmem, ...) in KiB; {} if gone."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if v.strip().endswith("kB"):
            out[k] = int(v.split()[0])
    return out


def mapped_rss_kib(pid: int, path: Path) -> int:
    """Resident KiB of the mappings of `path` in process `pid` (from /proc/PID/smaps); 0 if none or gone."""
    target, total, inside = str(Path(path).resolve()), 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(maxsplit=5)
                if head and "-" in head[0] and not head[0].endswith(":"):
                    inside = len(head) == 6 and head[5].strip() == target
                elif inside and head and head[0] == "Rss:":
                    total += int(head[1])
    except OSError:
        return 0
    return total


class Mount:
    """`annfs mount STORE MNT` in the foreground. `ready_secs`: from spawning the daemon to MNT/README.txt
    answering (polled every millisecond)."""

    def __init__(self, store, mnt: Path, cache: str, zero: str | None = None, cache_dir: Path | None = None,
                 overlay: Path | None = None, extra: tuple[str, ...] = ()):
        self.mnt = Path(mnt)
        # `bench-mount` is `mount` plus the `.annfs/zero` file (a hidden, benchmark-only command).
        command = ["bench-mount", "--zero-file", zero] if zero else ["mount"]
        args = [str(BIN), *command, str(store), str(mnt), "--cache-size", cache, "--log-level", "warn", *extra]
        if cache_dir is not None:
            args += ["--cache-dir", str(cache_dir)]
        if overlay:
            args += ["--overlay", str(overlay)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not (self.mnt / "README.txt").exists():
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError(f"mount failed: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            time.sleep(0.001)
        self.ready_secs = time.perf_counter() - t0

    def status_kib(self) -> dict[str, int]:
        """The daemon's /proc/PID/status memory fields in KiB."""
        return proc_status_kib(self.proc.pid)

    def peak_rss_kib(self) -> int:
        return self.status_kib().get("VmHWM", 0)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with open("/proc/self/mounts") as f:
            mounted = any(line.split()[1] == os.path.realpath(self.mnt) for line in f if len(line.split()) > 1)
        if mounted:
            tool = shutil.which("fusermount3") or shutil.which("fusermount")
            if tool:
                subprocess.run([tool, "-u", "-z", str(self.mnt)], capture_output=True)

    def __enter__(self) -> "Mount":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches() -> bool:
    """sync, then drop the OS page cache, dentries and inodes (root only). True if dropped."""
    if not can_drop_caches():
        return False
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters/min_free_ms")


@contextlib.contextmanager
def steady_vm_memory(hold_ms: int = 300_000, keep_free: int = 1 << 30):
    """Give every process of a benchmark run memory that costs the same to touch.

    On a virtual machine that hands free guest pages back to its host (free page reporting; this project's
    machines report a page as soon as it is free), the first touch of a page the host has taken back costs
    ~1.2-2.2 ms per MiB (a 1 GB array: 1.2-2.0 s instead of 0.09 s), so whichever process gets such pages -- the
    daemon, the reader or the peer -- runs up to 10x slower, by luck. When the kernel lets root say how long a
    page must stay free before it is reported (`min_free_ms`), this holds reports back for the run and touches
    the free memory once (all but `keep_free` bytes, never evicting the page cache), then restores the setting.
    Yields a note for the table's header; a no-op elsewhere (bare metal has no such cost)."""
    try:
        old = PAGE_REPORTING.read_text().strip()
        PAGE_REPORTING.write_text(f"{hold_ms}\n")
    except OSError:
        yield "VM free-page reporting left as it is (no min_free_ms here, or not root)"
        return
    try:
        import numpy as np
        free = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemFree:"))
        want, held, touched, t0 = max(0, free - keep_free), [], 0, time.perf_counter()
        while touched < want:
            held.append(np.empty(min(256 * MIB, want - touched), np.uint8))
            held[-1][::4096] = 1
            touched += held[-1].size
        del held
        yield (f"VM free-page reporting held back for the run and {touched / (1 << 30):.1f} GiB of free memory "
               f"touched first ({time.perf_counter() - t0:.1f} s), so no process pays the host's first touch")
    finally:
        PAGE_REPORTING.write_text(f"{old}\n")


def read_seq(path: Path, bs: int = MIB, limit: int | None = None) -> tuple[int, float]:
    """dd-like: read `path` from the start in `bs` reads (up to `limit` bytes). (bytes, seconds)."""
    t0 = time.perf_counter()
    n = 0
    buf = bytearray(bs)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        while limit is None or n < limit:
            want = bs if limit is None else min(bs, limit - n)
            got = os.readv(fd, [view[:want]])
            if got == 0:
                break
            n += got
    finally:
        os.close(fd)
    return n, time.perf_counter() - t0


def mbps(n: int, secs: float) -> float:
    return n / secs / 1e6 if secs > 0 else float("inf")


@dataclass
class Row:
    """One line of the --scale table. kind: `time` (seconds, lower is better; ratio = peer / annfs), `rate`
    (MB/s, higher is better; ratio = annfs / peer) or `limit` (seconds against an absolute bound, no peer)."""
    name: str
    kind: str
    annfs: float
    peer: float | None
    peer_what: str
    target: float
    vmhwm_mib: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.peer is None or self.kind == "limit":
            return None
        if self.kind == "time":
            return self.peer / self.annfs if self.annfs > 0 else float("inf")
        return self.annfs / self.peer if self.peer > 0 else float("inf")

    @property
    def ok(self) -> bool:
        if self.kind == "limit":
            return self.annfs < self.target
        r = self.ratio
        return r is not None and r >= self.target


def _fmt(kind: str, v: float | None) -> str:
    if v is None:
        return "-"
    if kind == "rate":
        return f"{v:,.0f} MB/s"
    return f"{v * 1e3:,.1f} ms" if v < 1 else f"{v:,.2f} s"


def render_table(rows: list[Row], budget_mib: float) -> str:
    """The table: annfs, peer, ratio (> 1 = annfs faster), target, pass/fail, daemon VmHWM vs the budget."""
    limit = budget_mib + 64
    head = (f"{'task':44} {'annfs':>12} {'peer':>12} {'ratio':>7} {'target':>9} {'':4} "
            f"{'VmHWM':>9} {'mem':4}  peer is")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        target = f"<{_fmt('time', r.target)}" if r.kind == "limit" else f">={r.target:g}x"
        mem = "-" if r.vmhwm_mib is None else f"{r.vmhwm_mib:,.0f} MiB"
        mem_ok = "" if r.vmhwm_mib is None else ("ok" if r.vmhwm_mib <= limit else "OVER")
        lines.append(f"{r.name:44} {_fmt(r.kind, r.annfs):>12} {_fmt(r.kind, r.peer):>12} {ratio:>7} "
                     f"{target:>9} {'PASS' if r.ok else 'FAIL':4} {mem:>9} {mem_ok:4}  {r.peer_what}")
        lines.extend(f"{'':46}{n}" for n in r.notes)
    passed = sum(r.ok for r in rows)
    over = [r for r in rows if r.vmhwm_mib is not None and r.vmhwm_mib > limit]
    lines.append(f"{passed}/{len(rows)} rows meet their target; daemon VmHWM over budget + 64 MiB "
                 f"({limit:.0f} MiB) in {len(over)} of {sum(r.vmhwm_mib is not None for r in rows)} workloads")
    return "\n".join(lines)


def write_json(path: Path, config: dict, rows: list[Row]) -> None:
    """The table as JSON: config, and per row its fields plus ratio and ok."""
    out = {"config": config,
           "rows": [{**asdict(r), "ratio": r.ratio, "ok": r.ok} for r in rows]}
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
