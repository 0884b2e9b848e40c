"""Small driver-side file operations through Hadoop's FileSystem API.

Going through the JVM keeps the jobs storage-agnostic: the same call reads a local path,
``file://`` or, on EMR, ``s3://`` (EMRFS), with the cluster's own credentials. Only small
files (manifests, weights, reports, plots) pass through here; images are read by Spark.
"""

from __future__ import annotations

import os
import tempfile

from pyspark.sql import SparkSession


def _fs_and_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, path


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _fs_and_path(spark, uri)
    return bool(fs.exists(path))


def file_length(spark: SparkSession, uri: str) -> int | None:
    """Size in bytes, or None when the file does not exist."""
    fs, path = _fs_and_path(spark, uri)
    if not fs.exists(path):
        return None
    return int(fs.getFileStatus(path).getLen())


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    fs, path = _fs_and_path(spark, uri)
    jvm = spark.sparkContext._jvm
    stream = fs.open(path)
    try:
        out = jvm.java.io.ByteArrayOutputStream()
        jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, out, 1 << 16, False)
        return bytes(out.toByteArray())
    finally:
        stream.close()


def read_text(spark: SparkSession, uri: str) -> str:
    return read_bytes(spark, uri).decode("utf-8")


def write_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Create or overwrite `uri` with `data` (parent folders are created as needed)."""
    fs, path = _fs_and_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def copy_to_local(spark: SparkSession, uri: str) -> str:
    """Copy a remote file to a fresh local temp folder, keeping its file name."""
    fs, path = _fs_and_path(spark, uri)
    local_dir = tempfile.mkdtemp(prefix="fruits-")
    local = os.path.join(local_dir, str(path.getName()))
    jvm = spark.sparkContext._jvm
    fs.copyToLocalFile(False, path, jvm.org.apache.hadoop.fs.Path("file://" + local), True)
    return local
