#!/usr/bin/env python3
"""A small static HTTP server for the tests: serves DIR on 127.0.0.1, honours `Range` (incl. suffix ranges
`bytes=-N`) with 206 answers, and logs every request path to an optional file.

    python range_server.py DIR [--port N] [--log FILE] [--forbid] [--stall REGEX [--stall-secs S]]
                           [--latency MS] [--fail-every N [--fail-status 500|503]] [--truncate-every N]

Prints `PORT <n>` on stdout once listening.  `--forbid` answers 403 to everything.  `--stall REGEX` holds every
request whose path matches for S seconds (default 60) before answering — a server that stops answering.
Answers carry an `ETag` (from the file's size and mtime, like nginx) and `Last-Modified`, and a GET with a
non-matching `If-Match` gets 412.  `--latency MS` delays every answer; `--fail-every N` answers every Nth GET
with 500 (`--fail-status 503`: 503 with S3's `SlowDown` error body and `Retry-After: 1`, a throttling server)
and `--truncate-every N` cuts every Nth GET body short (closing the connection) — faults a client must retry
through.

A GET of a top-level directory with `?list-type=2` lists it as a bucket, in the XML form S3's ListObjectsV2 and
Google Cloud Storage's XML API share (`prefix`, `delimiter`; one page): with the `gs://` client pointed at this
server (GOOGLE_BASE_URL), `/BUCKET/KEY` is GCS's path-style object URL.
"""
from __future__ import annotations

import argparse
import email.utils
import itertools
import os
import re
import sys
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def etag(st: os.stat_result) -> str:
    """A file's ETag: its mtime and size, like nginx."""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def bucket_listing(bucket_dir: str, prefix: str, delimiter: str) -> bytes:
    """ListBucketResult (list-type 2) of the files under `bucket_dir` whose keys start with `prefix`, rolled up at
    `delimiter` into CommonPrefixes."""
    keys = []
    for d, _, files in os.walk(bucket_dir):
        for f in files:
            full = os.path.join(d, f)
            keys.append((os.path.relpath(full, bucket_dir).replace(os.sep, "/"), full))
    contents, prefixes = [], set()
    for key, full in sorted(keys):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
            continue
        st = os.stat(full)
        modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(st.st_mtime))
        contents.append(f"<Contents><Key>{escape(key)}</Key><Size>{st.st_size}</Size>"
                        f"<LastModified>{modified}</LastModified><ETag>{escape(etag(st))}</ETag></Contents>")
    common = "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in sorted(prefixes))
    return ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents)}</KeyCount>{''.join(contents)}{common}"
            "</ListBucketResult>").encode()


def make_handler(root: str, log_path: str | None, forbid: bool, stall: str | None = None, stall_secs: float = 60.0,
                 latency: float = 0.0, fail_every: int = 0, truncate_every: int = 0, fail_status: int = 500):
    lock = threading.Lock()
    gets = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):  # quiet
            pass

        def _log(self):
            if log_path:
                with lock, open(log_path, "a") as f:
                    f.write(f"{self.command} {self.path} {self.headers.get('Range', '-')}\n")

        def _target(self) -> str | None:
            rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            full = os.path.realpath(os.path.join(root, rel))
            if not full.startswith(os.path.realpath(root)) or not os.path.isfile(full):
                return None
            return full

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head=False, cut=False):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if cut:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if not head and body:
                self.wfile.write(body[: len(body) // 2] if cut else body)

        def _send_file(self, status: int, path: str, start: int, length: int, headers: dict, head=False,
                       cut=False):
            """Answers with `length` bytes of the file at `path` from `start`, sent by the kernel (`sendfile`,
            as static servers do; a copy through Python cost the benchmarks' two cores what the client needs),
            or cut in half (`cut`, read and written here)."""
            if cut:
                with open(path, "rb") as f:
                    f.seek(start)
                    return self._send(status, f.read(length), headers, head=head, cut=True)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if not head and length:
                with open(path, "rb") as f:
                    self.connection.sendfile(f, start, length)

        def do_HEAD(self):
            self.do_GET(head=True)

        def do_GET(self, head=False):
            self._log()
            if stall and re.search(stall, self.path):
                time.sleep(stall_secs)
            if latency:
                time.sleep(latency)
            if forbid:
                return self._send(403, b"forbidden", head=head)
            n = 0 if head else next(gets)
            if fail_every and n and n % fail_every == 0:
                if fail_status == 503:
                    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                            b'<Message>Please reduce your request rate.</Message></Error>')
                    return self._send(503, body, {"Retry-After": "1", "Content-Type": "application/xml"}, head=head)
                return self._send(500, b"injected failure", head=head)
            cut = bool(truncate_every and n and n % truncate_every == 0)
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if query.get("list-type") == ["2"]:
                bucket = urllib.parse.unquote(url.path).strip("/")
                bucket_dir = os.path.realpath(os.path.join(root, bucket))
                inside = bucket_dir.startswith(os.path.realpath(root) + os.sep)
                if "/" in bucket or not inside or not os.path.isdir(bucket_dir):
                    return self._send(404, b"no such bucket", head=head)
                body = bucket_listing(bucket_dir, query.get("prefix", [""])[0], query.get("delimiter", [""])[0])
                return self._send(200, body, {"Content-Type": "application/xml"}, head=head)
            path = self._target()
            if path is None:
                return self._send(404, b"not found", head=head)
            st = os.stat(path)
            size = st.st_size
            tag = etag(st)
            meta = {"ETag": tag, "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
            want = self.headers.get("If-Match")
            if want and want.strip() not in ("*", tag):
                return self._send(412, b"precondition failed", meta, head=head)
            rng = self.headers.get("Range")
            if rng:
                m = RANGE.match(rng.strip())
                if not m or (not m.group(1) and not m.group(2)):
                    return self._send(416, headers={"Content-Range": f"bytes */{size}"}, head=head)
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                else:
                    start, end = max(0, size - int(m.group(2))), size - 1
                end = min(end, size - 1)
                if start >= size or start > end:
                    return self._send(416, headers={"Content-Range": f"bytes */{size}"}, head=head)
                return self._send_file(206, path, start, end + 1 - start,
                                       {"Content-Range": f"bytes {start}-{end}/{size}", "Accept-Ranges": "bytes",
                                        **meta}, head=head, cut=cut)
            if head:
                # HEAD answers the size without reading the object (a whole-file read of an atlas
                # would be counted as the client's mount time).
                self.send_response(200)
                for k, v in {"Accept-Ranges": "bytes", **meta, "Content-Length": str(size)}.items():
                    self.send_header(k, v)
                self.end_headers()
                return
            return self._send_file(200, path, 0, size, {"Accept-Ranges": "bytes", **meta}, head=head, cut=cut)

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--forbid", action="store_true")
    ap.add_argument("--stall")
    ap.add_argument("--stall-secs", type=float, default=60.0)
    ap.add_argument("--latency", type=float, default=0.0, help="milliseconds added to every answer")
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--fail-status", type=int, default=500, choices=(500, 503))
    ap.add_argument("--truncate-every", type=int, default=0)
    a = ap.parse_args()
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    # Clients open many connections at once (parallel range GETs): socketserver's default backlog
    # of 5 drops SYNs, which the client's kernel retries only after a second.
    ThreadingHTTPServer.request_queue_size = 256
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.root, a.log, a.forbid, a.stall, a.stall_secs,
                                                                      a.latency / 1000, a.fail_every,
                                                                      a.truncate_every, a.fail_status))
    print(f"PORT {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
