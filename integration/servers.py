"""Servers the tests and benchmarks start on loopback: integration/range_server.py (a Range-capable HTTP server
with injectable latency and faults) on a free port."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RangeServer:
    """range_server.py serving `root`; `extra` are its options (--latency, --fail-every, --forbid, ...)."""

    def __init__(self, root: Path, *extra: str, port: int = 0, log: Path | None = None):
        args = [sys.executable, str(HERE / "range_server.py"), str(root), "--port", str(port), *extra]
        if log:
            args += ["--log", str(log)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def kill(self):
        self.proc.kill()
        self.proc.wait()
