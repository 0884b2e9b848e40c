"""The one S3 layer of the orchestration side: a `Bucket` is the Amazon provider's S3Hook bound
to one bucket, and every read or write of the DAG's tasks goes through it.

The hook takes its endpoint and credentials from the Airflow connection, so the same code
talks to AWS, MinIO (docker-compose) and the embedded moto server (`make demo`, tests).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys a request


def s3_hook(conn_id: str | None):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id)


class Bucket:
    """Keys of one bucket, read and written through an S3Hook (or any object with its methods)."""

    def __init__(self, hook, name: str):
        self.hook = hook
        self.name = name

    @classmethod
    def connect(cls, conn_id: str | None, name: str) -> "Bucket":
        return cls(s3_hook(conn_id), name)

    def __repr__(self) -> str:
        return f"Bucket({self.name!r})"

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def key_of(self, uri: str) -> str:
        """The key of an s3:// URI of this bucket (a URI of another bucket is an error)."""
        head = f"s3://{self.name}/"
        if not uri.startswith(head):
            raise ValueError(f"{uri} is not in bucket {self.name}")
        return uri[len(head):]

    # ------------------------------------------------------------------ reads

    def list_keys(self, prefix: str) -> list[str]:
        """Object keys under `prefix`, sorted; folder markers (keys ending in '/') left out."""
        keys = self.hook.list_keys(bucket_name=self.name, prefix=prefix) or []
        return sorted(k for k in keys if not k.endswith("/"))

    def exists(self, key: str) -> bool:
        return bool(self.hook.check_for_key(key, bucket_name=self.name))

    def read_text(self, key: str) -> str:
        return self.hook.read_key(key, bucket_name=self.name)

    def read_bytes(self, key: str) -> bytes:
        return self.hook.get_key(key, bucket_name=self.name).get()["Body"].read()

    def size(self, key: str) -> int:
        return int(self.hook.get_key(key, bucket_name=self.name).content_length)

    def read_json(self, key: str, default=None):
        if not self.exists(key):
            return default
        return json.loads(self.read_text(key))

    def read_parquet(self, prefix: str, columns: list[str] | None = None):
        """All parquet parts under `prefix` as one pyarrow Table (no Spark needed)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = [k for k in self.list_keys(prefix) if k.endswith(".parquet")]
        if not parts:
            raise FileNotFoundError(f"no parquet files under {self.uri(prefix)}")
        tables = [pq.read_table(io.BytesIO(self.read_bytes(key)), columns=columns) for key in parts]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def region(self) -> str:
        """The bucket's region (GetBucketLocation answers None for us-east-1 and 'EU' for eu-west-1)."""
        location = self.hook.get_conn().get_bucket_location(Bucket=self.name).get("LocationConstraint")
        return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)

    # ------------------------------------------------------------------ writes

    def write_text(self, key: str, text: str) -> None:
        self.hook.load_string(text, key=key, bucket_name=self.name, replace=True)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.hook.load_bytes(data, key=key, bucket_name=self.name, replace=True)

    def write_json(self, key: str, payload) -> None:
        self.write_text(key, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        for start in range(0, len(keys), DELETE_BATCH):
            self.hook.delete_objects(bucket=self.name, keys=keys[start:start + DELETE_BATCH])
        return len(keys)

    # ------------------------------------------------------------------ local copies

    def download(self, key: str, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(self.read_bytes(key))
        return destination

    def download_prefix(self, prefix: str, destination: Path) -> int:
        """Mirror `prefix` into `destination` (files already there with the same size are kept)."""
        count = 0
        for key in self.list_keys(prefix):
            target = destination / key[len(prefix):]
            if not (target.exists() and target.stat().st_size == self.size(key)):
                self.download(key, target)
            count += 1
        return count

    def upload_dir(self, source: Path, prefix: str) -> int:
        """Replace whatever is under `prefix` with the files of `source` (a re-run overwrites)."""
        self.delete_prefix(prefix)
        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".crc"))
        for path in files:
            self.hook.load_file(str(path), key=prefix + path.relative_to(source).as_posix(),
                                bucket_name=self.name, replace=True)
        return len(files)
