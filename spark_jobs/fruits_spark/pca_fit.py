"""The PCA job's fit: one scan of the distinct new contents, the checks, the spectrum.

A content (sha256) fitted before, or met twice, weighs once: `contents_to_fit` keeps one row
per new content before `moments.compute` scans them. `check` turns what the scan found wrong
into one readable line; `fit` eigendecomposes the merged covariance (or runs Spark ML's PCA).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from fruits_spark import moments, pca_model, pca_state
from fruits_spark.runtime import JobError

log = logging.getLogger(__name__)


@dataclass
class Scan:
    """The rows fitted by this run and their moments."""

    frame: object  # DataFrame: one row per content not fitted before (and every row without a sha256)
    stats: moments.Moments
    new_contents: np.ndarray  # their digests
    skipped: int  # rows left out: known or repeated contents


def scan(spark, frame, index: np.ndarray, datasets: int) -> Scan:
    """The moments of the rows of `frame` whose contents are not in `index` (`datasets` is logged)."""
    fitted, new_contents, skipped = contents_to_fit(spark, frame, index)
    log.info(
        "scanning %d dataset(s): checks, row count, mean and covariance (%d known or repeated content(s) skipped)",
        datasets,
        skipped,
    )
    phase = time.perf_counter()
    stats = moments.compute(fitted)
    log.info("scanned in %.1f s", time.perf_counter() - phase)
    return Scan(fitted, stats, new_contents, skipped)


def contents_to_fit(spark, frame, index: np.ndarray):
    """(rows to fit, their new digests, rows skipped): one row per content not in `index`.

    Rows without a sha256 all count. The common case (no content seen before, none twice)
    keeps the frame as it is; otherwise one row per new content is kept by a window over the
    digest, which costs a shuffle of the scanned rows.
    """
    import pyarrow as pa
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    digest = F.lower(F.substring("sha256", 1, 2 * pca_state.DIGEST_BYTES))
    counted = frame.where(F.col("sha256").isNotNull()).groupBy(digest.alias("digest")).count()
    seen = moments.collect_as_arrow(counted, pa.schema([("digest", pa.string()), ("count", pa.int64())]))
    candidates = pca_state.digests(r["digest"] for r in seen)
    new = pca_state.novel(candidates, index)
    repeats = sum(r["count"] for r in seen) - len(seen)
    if len(new) == len(candidates) and not repeats:
        return frame, new, 0
    keep = spark.createDataFrame([(digest,) for digest in pca_state.to_hex(new)], "digest string")
    first = F.row_number().over(Window.partitionBy("digest").orderBy("path"))
    hashed = (
        frame.where(F.col("sha256").isNotNull())
        .withColumn("digest", digest)
        .join(F.broadcast(keep), "digest", "left_semi")
        .withColumn("first", first)
        .where(F.col("first") == 1)
        .drop("digest", "first")
    )
    fitted = hashed.unionByName(frame.where(F.col("sha256").isNull()))
    skipped = sum(r["count"] for r in seen) - len(new)
    return fitted, new, skipped


def check(stats: moments.Moments) -> tuple[int, int]:
    """(rows, dimension), or a JobError for empty input, missing vectors, mixed lengths, bad values."""
    if not stats.rows:
        raise JobError("the features input is empty (0 rows): nothing to fit")
    if stats.null_vectors:
        raise JobError(f"{stats.null_vectors} of {stats.rows} rows have no features vector")
    if stats.min_dim != stats.max_dim:
        raise JobError(f"features vectors have mixed lengths: from {stats.min_dim} to {stats.max_dim} values")
    if stats.bad_vectors:
        raise JobError(f"{stats.bad_vectors} of {stats.rows} features vectors contain NaN, infinite or null values")
    if stats.max_dim < 1:
        raise JobError("features vectors are empty (0 values)")
    if not stats.clean:  # every check above passed, so this would be a bug
        raise RuntimeError("the covariance pass returned no matrix for valid input")
    return stats.rows, stats.max_dim


def fit(frame, stats: moments.Moments, solver: str) -> tuple[np.ndarray, np.ndarray]:
    """(explained variance ratios, components as columns) over the whole spectrum."""
    if solver == "batched":
        return pca_model.principal_components(stats.covariance())
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.functions import array_to_vector

    vectors = frame.select(array_to_vector("features").alias("vector"))
    centring = StandardScaler(withMean=True, withStd=False, inputCol="vector", outputCol="centred").fit(vectors)
    return pca_model.fit_with_spark_ml(centring.transform(vectors), stats.max_dim)
