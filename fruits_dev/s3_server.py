"""An S3 endpoint for local runs: the configured one, or moto's server on loopback."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from fruits.settings import DEFAULT_REGION


@contextmanager
def s3_endpoint(endpoint_url: str | None = None):
    """Yield an endpoint URL; start an embedded moto server when none is configured."""
    endpoint_url = endpoint_url or os.environ.get("FRUITS_S3_ENDPOINT")
    if endpoint_url:
        yield endpoint_url
        return
    with embedded_endpoint() as embedded:
        yield embedded


@contextmanager
def embedded_endpoint(wrap=None):
    """Yield the URL of moto's server on loopback (what moto's ThreadedMotoServer runs), its WSGI
    app behind `wrap(app)` when given: a bench sees every request the server answers."""
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, wrap(app) if wrap else app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        thread.join()


def client(endpoint_url: str | None, region: str = DEFAULT_REGION, key: str = "testing", secret: str = "testing"):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=key, aws_secret_access_key=secret
    )


def ensure_bucket(s3, bucket: str, region: str = DEFAULT_REGION) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})


def upload_tree(s3, bucket: str, root, prefix: str) -> int:
    """Upload every file below `root` to `prefix`, keeping relative paths (and spaces) as keys."""
    from pathlib import Path

    count = 0
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + path.relative_to(root).as_posix())
            count += 1
    return count
