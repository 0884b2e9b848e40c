"""Parquet in S3 read as a stream of record batches, in bounded memory (no Spark, no full table).

pyarrow reads a Parquet file through any seekable file object: `RangedObject` is one, each
read a ranged GET of the S3 object (through the S3 hook's client, so moto, MinIO and AWS all
work), buffered by `io.BufferedReader`. pyarrow then fetches the footer and, row group by row
group, only the requested columns' chunks; `iter_batches` hands them over `rows` at a time.
Memory is bounded by one row group's requested columns, whatever the number of files or rows.
"""

from __future__ import annotations

import io

STREAM_ROWS = 1024  # rows per record batch handed to the checks (1,280 floats a row: ~5 MB)
READ_BUFFER = 1 << 20  # bytes per ranged GET at least (the footer and small chunks in one request)


class RangedObject(io.RawIOBase):
    """A read-only, seekable view of one S3 object; every read is a ranged GET."""

    def __init__(self, client, bucket: str, key: str, size: int | None = None):
        self.client, self.bucket, self.key = client, bucket, key
        self.size = size if size is not None else int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        self.position = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size or not len(buffer):
            return 0
        end = min(self.size, self.position + len(buffer)) - 1
        body = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}")["Body"]
        data = body.read()
        self.requests += 1
        view = memoryview(buffer).cast("B")
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


def open_object(bucket, key: str) -> io.BufferedReader:
    return io.BufferedReader(RangedObject(bucket.hook.get_conn(), bucket.name, key), buffer_size=READ_BUFFER)


def parquet_keys(bucket, prefix: str) -> list[str]:
    """The parquet parts under `prefix`, or FileNotFoundError naming the prefix."""
    keys = [k for k in bucket.list_keys(prefix) if k.endswith(".parquet")]
    if not keys:
        raise FileNotFoundError(f"no parquet files under {bucket.uri(prefix)}")
    return keys


def iter_batches(bucket, prefix: str, columns: list[str], rows: int = STREAM_ROWS):
    """Record batches (`columns` only, at most `rows` rows each) of every parquet part under `prefix`."""
    import pyarrow.parquet as pq

    for key in parquet_keys(bucket, prefix):
        with open_object(bucket, key) as handle:
            # buffered column reads, no pre-buffering, one thread: the decoded chunk is the peak
            parquet = pq.ParquetFile(handle, buffer_size=READ_BUFFER, pre_buffer=False)
            yield from parquet.iter_batches(batch_size=rows, columns=columns, use_threads=False)
