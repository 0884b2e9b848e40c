"""The one S3 layer of the orchestration side: a `Bucket` is the Amazon provider's S3Hook bound
to one bucket, and every read or write of the DAG's tasks goes through it.

The hook takes its endpoint and credentials from the Airflow connection, so the same code
talks to AWS, MinIO (docker-compose) and the embedded moto server (`make demo`, tests).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys a request


class ConcurrentWriteError(RuntimeError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: what planning needs to know without reading it."""

    key: str
    size: int
    etag: str


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _precondition_failed(exc: Exception) -> bool:
    # 412 PreconditionFailed; 409 ConditionalRequestConflict (a concurrent conditional write).
    return _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def s3_hook(conn_id: str | None):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id)


class Bucket:
    """Keys of one bucket, read and written through an S3Hook (or any object with its methods)."""

    def __init__(self, hook, name: str):
        self.hook = hook
        self.name = name

    @classmethod
    def connect(cls, conn_id: str | None, name: str) -> Bucket:
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
        return uri[len(head) :]

    # ------------------------------------------------------------------ reads

    def client(self):
        return self.hook.get_conn()

    def list_objects(self, prefix: str):
        """Yield the objects under `prefix` (key, size, ETag) page by page, in key order; folder
        markers (keys ending in '/') left out. One LIST request per 1,000 objects."""
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    yield ObjectInfo(item["Key"], int(item["Size"]), item["ETag"])

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and ETag, or None when there is no such key."""
        try:
            answer = self.client().head_object(Bucket=self.name, Key=key)
        except Exception as exc:  # botocore ClientError: 404 / NoSuchKey
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(key, int(answer["ContentLength"]), answer["ETag"])

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

    def read_bytes_if_exists(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key (one GET, where `exists` and
        `read_bytes` take three requests): for objects that may not be there yet."""
        try:
            answer = self.client().get_object(Bucket=self.name, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return answer["Body"].read()

    def size(self, key: str) -> int:
        return int(self.hook.get_key(key, bucket_name=self.name).content_length)

    def sha256_of(self, key: str) -> str:
        """The object's sha256 (hex): the SHA-256 checksum S3 keeps for an object written with one
        (`upload_file_checked`; one HEAD), else its bytes hashed as they stream (a store that keeps
        no checksum, an object written by something else)."""
        answer = self.client().head_object(Bucket=self.name, Key=key, ChecksumMode="ENABLED")
        stored = answer.get("ChecksumSHA256")
        if stored and "-" not in stored and answer.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            return base64.b64decode(stored).hex()
        digest = hashlib.sha256()
        body = self.client().get_object(Bucket=self.name, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()

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

    def upload_file_checked(self, key: str, path: Path, sha256: str) -> None:
        """Upload a local file in one PUT with its SHA-256: S3 refuses bytes that do not match it,
        and keeps it for `sha256_of` (at most 5 GB: a wheel, not a dataset)."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        with open(path, "rb") as body:
            self.client().put_object(Bucket=self.name, Key=key, Body=body, ChecksumSHA256=checksum)

    def write_json(self, key: str, payload) -> None:
        self.write_text(key, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")

    def read_json_versioned(self, key: str):
        """(payload, ETag) of a JSON object, or (None, None) when there is none: the ETag is what a
        conditional write (`write_json_if`) compares against."""
        try:
            answer = self.client().get_object(Bucket=self.name, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None, None
            raise
        return json.loads(answer["Body"].read().decode("utf-8")), answer["ETag"]

    def write_json_if(self, key: str, payload, *, etag: str | None) -> str:
        """Write `payload` only if the object still has `etag` (None: only if it does not exist yet).

        S3 conditional writes (If-Match / If-None-Match): of two writers that read the same
        version, the second fails with ConcurrentWriteError instead of erasing the first's
        change. Returns the new ETag.
        """
        body = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            answer = self.client().put_object(
                Bucket=self.name, Key=key, Body=body, ContentType="application/json", **condition
            )
        except Exception as exc:
            if _precondition_failed(exc):
                raise ConcurrentWriteError(
                    f"{self.uri(key)} changed since it was read (another writer?); nothing was written"
                ) from None
            raise
        return answer["ETag"]

    def copy_if_unchanged(self, source_key: str, etag: str, target_key: str) -> bool:
        """Server-side copy of `source_key` to `target_key` if it still has `etag`.

        False when the source changed or vanished since it was listed: the caller leaves it
        for a later run instead of processing content it never saw.
        """
        try:
            self.client().copy_object(
                Bucket=self.name,
                Key=target_key,
                CopySourceIfMatch=etag,
                CopySource={"Bucket": self.name, "Key": source_key},
            )
        except Exception as exc:
            if _precondition_failed(exc) or _error_code(exc) in ("404", "NoSuchKey"):
                return False
            raise
        return True

    def delete_if_unchanged(self, key: str, etag: str) -> bool:
        """Delete `key` only while it still holds the content with `etag` (a re-upload since is new
        content and stays). True when the object is gone (deleted now or before)."""
        current = self.head(key)
        if current is None:
            return True
        if current.etag != etag:
            return False
        try:
            self.client().delete_object(Bucket=self.name, Key=key, IfMatch=etag)
        except Exception as exc:
            if _precondition_failed(exc):
                return False
            if _error_code(exc) in ("404", "NoSuchKey"):
                return True
            raise
        return True

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        for start in range(0, len(keys), DELETE_BATCH):
            self.hook.delete_objects(bucket=self.name, keys=keys[start : start + DELETE_BATCH])
        return len(keys)
