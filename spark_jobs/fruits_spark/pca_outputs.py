"""What the PCA job writes besides its report: the projected vectors, the model, the plots, and
the state files the next run starts from."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fruits_spark import hadoop_fs, interface, moments, pca_model, pca_report, pca_state

log = logging.getLogger(__name__)

SCATTER_POINTS = 5000


def write_space(
    spark, frame, basis, ratios: list[float], spectrum, order: list[str], *, output: str, model: str, report: str,
    variance: float | None, seed: int,
) -> tuple[dict[str, int], dict[str, str]]:  # fmt: skip
    """(rows per batch, plot URIs): the vectors of `frame` projected on `basis` (a
    `pca_state.Basis`), the model and both plots (beside `report`).

    The projection and the model's small save jobs (it needs only the basis) run from side
    threads, in that order, so the save takes task slots as the projection frees them. The
    plots stay in this thread (pyplot is not thread-safe): the scree plot is drawn meanwhile.
    """
    bc_basis = spark.sparkContext.broadcast((basis.mean, basis.components))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fruits-pca") as side:
        written = side.submit(write_vectors, frame, bc_basis, output, order)
        saved = side.submit(save_model, spark, model, basis.mean, basis.components, ratios)
        plots = interface.plot_uris(report)
        scree = pca_report.scree_png(spectrum.tolist(), target=variance, shown=basis.k)
        hadoop_fs.write_bytes(spark, plots["scree"], scree)
        batches = written.result()
        projected_rows = sum(batches.values())
        # a batch whose images were all rejected projects nothing new: an empty scatter
        points, labels = (
            scatter_sample(spark, output, projected_rows, seed) if projected_rows else (np.zeros((0, 2)), [])
        )
        hadoop_fs.write_bytes(spark, plots["scatter"], pca_report.scatter_png(points, labels, ratios[: basis.k]))
        saved.result()
    bc_basis.unpersist()
    return batches, plots


def write_vectors(frame, bc_basis, output: str, order: list[str]) -> dict[str, int]:
    """Pass 2: the centred vectors projected on the broadcast basis, one matrix product per batch,
    written under <output>/batch=<id>/; returns the rows written per batch, in `order` (the
    inputs' order; batches without rows have no folder and are left out)."""
    from pyspark.sql import functions as F

    phase = time.perf_counter()
    projected = frame.select("path", "label", "features", "batch").mapInArrow(
        pca_model.projector(bc_basis), pca_model.PROJECTED_BATCH_SCHEMA
    )
    pca_model.projected_writer(projected).partitionBy("batch").parquet(output)
    counts = {r["batch"]: r["count"] for r in frame.groupBy("batch").agg(F.count(F.lit(1)).alias("count")).collect()}
    log.info("wrote %s in %.1f s", output, time.perf_counter() - phase)
    return in_order(counts, order)


def in_order(counts: dict[str, int], order: list[str]) -> dict[str, int]:
    """The batches with rows, those of `order` first in its order, then the others by name."""
    ranked = {batch: i for i, batch in enumerate(order)}
    return {b: counts[b] for b in sorted(counts, key=lambda b: (ranked.get(b, len(ranked)), b)) if counts[b]}


def save_model(spark, uri: str, mean: np.ndarray, basis: np.ndarray, ratios: list[float]) -> None:
    pca_model.spark_ml_pipeline(spark, mean, basis, ratios).write().overwrite().save(uri)
    log.info("saved the model %s", uri)


def scatter_sample(spark, output: str, rows: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Up to SCATTER_POINTS (first two components, label) pairs from the written vectors."""
    from pyspark.sql import functions as F

    fraction = min(1.0, SCATTER_POINTS / max(rows, 1))
    sample = (
        spark.read.parquet(output)
        .sample(fraction=fraction, seed=seed)
        .limit(SCATTER_POINTS)
        .select("label", F.slice("pca_features", 1, 2).alias("xy"))
        .collect()
    )
    points = np.array([r.xy for r in sample], dtype=float).reshape(len(sample), -1)
    return points, [r.label for r in sample]


def state_files(
    merged: moments.Moments, basis: pca_state.Basis | None, contents: np.ndarray, vectors: list[str]
) -> dict[str, bytes]:
    """The files the next run starts from (`pca_state`), by name; no basis is an empty one."""
    return {
        pca_state.MOMENTS: pca_state.moments_to_bytes(merged),
        pca_state.BASIS: pca_state.basis_to_bytes(basis or pca_state.Basis("", np.zeros(0), np.zeros((0, 0)))),
        pca_state.CONTENTS: pca_state.digests_to_bytes(contents),
        pca_state.VECTORS_LIST: pca_state.vectors_list_text(vectors).encode("utf-8"),
    }


def write_state(
    spark, folder: str, merged: moments.Moments, basis: pca_state.Basis | None, contents: np.ndarray, vectors: list[str]
) -> dict[str, str]:
    """Write the state files into `folder` (beside the report); returns their URIs by name."""
    uris = {}
    for name, data in state_files(merged, basis, contents, vectors).items():
        uris[name] = f"{folder}/{name}"
        hadoop_fs.write_bytes(spark, uris[name], data)
    return uris
