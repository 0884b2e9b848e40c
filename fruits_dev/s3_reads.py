"""What a job read from the embedded S3 server: a WSGI layer around moto's app
(`s3_server.embedded_endpoint(wrap=...)`) that counts, while recording, the body bytes the server
sent for object GETs (ranged ones included), per key prefix.

Measured at the server, so it is what the client really fetched (S3A's ranged and repeated reads
count each time), whatever client read it. Path-style requests only (`/<bucket>/<key>`): S3A on
an endpoint of loopback uses them (`fruits.spark_s3a`).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from urllib.parse import unquote


def prefix_of(key: str, depth: int = 2) -> str:
    """'features/batch=b1/part-0.parquet' -> 'features/batch=b1/': the dataset a key belongs to."""
    parts = key.split("/")
    return "/".join(parts[:depth]) + "/" if len(parts) > depth else key


class ObjectReads:
    """The WSGI layer; `recording()` yields the {prefix: {"requests", "bytes"}} read meanwhile."""

    def __init__(self, app=None) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._reads: dict[str, dict[str, int]] | None = None  # None: not recording

    def wrap(self, app) -> ObjectReads:
        self.app = app
        return self

    @contextmanager
    def recording(self):
        reads: dict[str, dict[str, int]] = {}
        with self._lock:
            self._reads = reads
        try:
            yield reads
        finally:
            with self._lock:
                self._reads = None

    def __call__(self, environ, start_response):
        _, _, key = unquote(environ.get("PATH_INFO", "")).lstrip("/").partition("/")
        with self._lock:
            reads = self._reads
        if reads is None or environ["REQUEST_METHOD"] != "GET" or not key:  # not an object read (a listing...)
            return self.app(environ, start_response)
        status = []

        def remember_status(code, headers, *exc_info):
            status.append(code)
            return start_response(code, headers, *exc_info)

        return self._counted(self.app(environ, remember_status), status, reads, prefix_of(key))

    def _counted(self, body, status, reads, prefix):
        try:
            for chunk in body:
                if status and status[0].startswith("2"):
                    self._add(reads, prefix, len(chunk))
                yield chunk
        finally:
            if status and status[0].startswith("2"):
                self._add(reads, prefix, 0, requests=1)
            close = getattr(body, "close", None)
            if close:
                close()

    def _add(self, reads, prefix, size, requests=0) -> None:
        with self._lock:
            entry = reads.setdefault(prefix, {"requests": 0, "bytes": 0})
            entry["requests"] += requests
            entry["bytes"] += size
