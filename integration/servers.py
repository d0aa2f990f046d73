"""Servers the tests and benchmarks start on loopback, each on a free port: integration/range_server.py (a
Range-capable HTTP server with injectable latency and faults) and nginx (the static file server a lab or a
cluster would put in front of its stores; used when installed)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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


NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                       if Path(p).exists()), None)

NGINX_CONF = """daemon off;
{user}
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {run}; proxy_temp_path {run}; fastcgi_temp_path {run};
    uwsgi_temp_path {run}; scgi_temp_path {run};
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


class Nginx:
    """nginx serving `root` as static files (Range, ETag and If-Match as nginx does them), run as the current
    user from a private config; `Nginx.available()` says whether nginx is installed."""

    @staticmethod
    def available() -> bool:
        return NGINX is not None

    def __init__(self, root: Path):
        self.run = Path(tempfile.mkdtemp(prefix="annfs-nginx-"))
        self.port = free_port()
        conf = self.run / "nginx.conf"
        # Run as root, nginx's workers would switch to `nobody`, who cannot read a test's private dirs.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(user=user, run=self.run, port=self.port, root=Path(root).resolve()))
        # -e: the startup error log too (the compiled-in /var/log/nginx is not writable by other users).
        self.proc = subprocess.Popen([NGINX, "-p", str(self.run), "-e", str(self.run / "error.log"), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.run / "error.log"
                    why = log.read_text(errors="replace") if log.exists() else "no error log"
                    self.kill()
                    raise RuntimeError(f"nginx did not start: {why}")
                time.sleep(0.05)

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def kill(self):
        # SIGTERM: the master stops its workers (SIGKILL would leave them serving, orphaned).
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.run, ignore_errors=True)
