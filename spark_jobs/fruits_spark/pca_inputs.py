"""What the PCA job reads: URI lists, features datasets with their batch, the previous run's state."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fruits_spark import hadoop_fs, interface, moments, pca_state
from fruits_spark.runtime import JobError

BATCH_OF_FILE = r"/batch=([^/]+)/[^/]*$"  # the batch id of a features file, from its folder name


def read_list(spark, uri: str, what: str, *, allow_empty: bool = False) -> list[str]:
    """The URIs a text file lists, one a line (blank lines and `#` comments left out)."""
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"{what} not found: {uri}")
    uris = [
        line.strip()
        for line in hadoop_fs.read_text(spark, uri).splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if not uris and not allow_empty:
        raise JobError(f"{what} is empty: {uri}")
    return uris


def read_features(spark, uris: list[str]):
    """(path, label, features, sha256, batch) of the datasets; `batch` from each file's folder
    `batch=<id>` ("input" elsewhere), sha256 null where the datasets have none."""
    from pyspark.sql import functions as F

    for uri in uris:
        if not hadoop_fs.exists(spark, uri):
            raise JobError(f"features not found: {uri}")
    frame = spark.read.parquet(*uris)
    missing = {"path", "label", "features"} - set(frame.columns)
    if missing:
        raise JobError(f"features input lacks column(s) {sorted(missing)}: {', '.join(uris)}")
    sha256 = F.col("sha256") if "sha256" in frame.columns else F.lit(None).cast("string")
    batch = F.regexp_extract(F.col("_metadata.file_path"), BATCH_OF_FILE, 1)
    return frame.select(
        "path",
        "label",
        "features",
        sha256.alias("sha256"),
        F.when(batch == "", F.lit("input")).otherwise(batch).alias("batch"),
    )


@dataclass
class Previous:
    """The previous run's state (`pca_state`): what this run merges with and projects into."""

    moments: moments.Moments
    basis: pca_state.Basis | None
    contents: np.ndarray
    vectors: list[str]
    rows: int  # vectors in the space


def read_previous(spark, folder: str | None) -> Previous | None:
    """The state a previous run left in `folder` (its report's folder), or None without one."""
    if not folder:
        return None
    folder = folder.rstrip("/")

    def read(name: str) -> bytes:
        uri = f"{folder}/{name}"
        if not hadoop_fs.exists(spark, uri):
            raise JobError(f"the previous state lacks {name}: {uri}")
        return hadoop_fs.read_bytes(spark, uri)

    report = json.loads(read(interface.PCA_REPORT))
    return Previous(
        moments=pca_state.moments_from_bytes(read(pca_state.MOMENTS)),
        basis=pca_state.basis_from_bytes(read(pca_state.BASIS)),
        contents=pca_state.digests_from_bytes(read(pca_state.CONTENTS)),
        vectors=pca_state.vectors_list_lines(read(pca_state.VECTORS_LIST).decode("utf-8")),
        rows=int(report["rows"]),
    )
