"""S3 access for the DAG's own tasks, always through the Amazon provider's S3Hook.

The hook takes its endpoint and credentials from the Airflow connection, so the same code
talks to AWS, MinIO (docker-compose) and the embedded moto server (`make demo`, tests).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def s3_hook(conn_id: str):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id)


def list_keys(hook, bucket: str, prefix: str) -> list[str]:
    return sorted(k for k in (hook.list_keys(bucket_name=bucket, prefix=prefix) or []) if not k.endswith("/"))


def read_json(hook, bucket: str, key: str, default=None):
    if not hook.check_for_key(key, bucket_name=bucket):
        return default
    return json.loads(hook.read_key(key, bucket_name=bucket))


def write_json(hook, bucket: str, key: str, payload) -> None:
    hook.load_string(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", key=key,
                     bucket_name=bucket, replace=True)


def read_bytes(hook, bucket: str, key: str) -> bytes:
    return hook.get_key(key, bucket_name=bucket).get()["Body"].read()


def delete_prefix(hook, bucket: str, prefix: str) -> int:
    keys = list_keys(hook, bucket, prefix)
    for start in range(0, len(keys), 1000):
        hook.delete_objects(bucket=bucket, keys=keys[start:start + 1000])
    return len(keys)


def download_key(hook, bucket: str, key: str, destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(read_bytes(hook, bucket, key))
    return destination


def download_prefix(hook, bucket: str, prefix: str, destination: Path) -> int:
    """Mirror `prefix` into `destination` (files already there with the same size are kept)."""
    count = 0
    for key in list_keys(hook, bucket, prefix):
        target = destination / key[len(prefix):]
        size = hook.get_key(key, bucket_name=bucket).content_length
        if not (target.exists() and target.stat().st_size == size):
            download_key(hook, bucket, key, target)
        count += 1
    return count


def upload_dir(hook, bucket: str, source: Path, prefix: str) -> int:
    """Replace whatever is under `prefix` with the files of `source` (a re-run overwrites)."""
    delete_prefix(hook, bucket, prefix)
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".crc"))
    for path in files:
        hook.load_file(str(path), key=prefix + path.relative_to(source).as_posix(), bucket_name=bucket, replace=True)
    return len(files)


def read_parquet_dataset(hook, bucket: str, prefix: str, columns: list[str] | None = None):
    """All parquet parts under `prefix` as one pyarrow Table (no Spark needed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [k for k in list_keys(hook, bucket, prefix) if k.endswith(".parquet")]
    if not parts:
        raise FileNotFoundError(f"no parquet files under s3://{bucket}/{prefix}")
    tables = [pq.read_table(io.BytesIO(read_bytes(hook, bucket, key)), columns=columns) for key in parts]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
