"""PCA of image features on Spark, projected exactly like classical (centred) PCA, incrementally.

    spark-submit spark_jobs/pca.py (--features URI[,URI...] | --features-list URI) --output URI \
        (--k N | --variance 0.95) --report PATH_OR_URI [--model URI] [--solver batched|spark-ml] \
        [--previous URI] [--history-list URI] [--refit auto|always|never] [--refit-angle 10] \
        [--space-id ID] [--vectors-uri URI] [--allow-empty]

`--features` are the new data. With `--previous` (the folder of the previous run's state: see
`fruits_spark.pca_state`), the job scans only them:
  1. one scan checks every new vector and computes the moments (row count, mean, scatter) of the
     contents not fitted before (sha256: a content counts once), one matrix product per Arrow
     batch (`fruits_spark.moments`); merged exactly with the previous cumulative moments, they
     are the moments of all the data. The driver eigendecomposes the d x d covariance;
  2. the refit policy (`pca_state.decide`) compares the current basis with the new top-k
     subspace: when it moved less than `--refit-angle` degrees, only the new batch is projected
     with the current basis (same space as every committed vector); otherwise (or no model yet,
     k changed, `--refit always`) every dataset of `--history-list` plus the new ones is
     re-projected on the new components, into a new space.
Without `--previous` the history is part of the scan (a fit from scratch). `--solver spark-ml`
fits Spark ML's `PCA` instead (from scratch only): same result, much slower.
Writes:
  --output  parquet partitioned by batch: <output>/batch=<id>/ (path, label, pca_features
            array<double>, k) for every batch projected by this run
  --model   the space's Spark ML PipelineModel (centring + PCA), default `<output>_model`
  --report  JSON (rows, input_dim, k, explained_variance, refit decision and angle, ...) with
            `<report>_scree.png` and `<report>_scatter.png` beside it, and in the same folder
            the state of the next run: moments.npz, basis.npz, contents.bin, vectors_list.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fruits_spark import hadoop_fs, interface, moments, pca_model, pca_report, pca_state
from fruits_spark.runtime import (JobError, create_session, exit_on_job_error, setup_logging, ship_package,
                                  unless_submitted)

JOB = "pca"
SCATTER_POINTS = 5000
BATCH_OF_FILE = r"/batch=([^/]+)/[^/]*$"  # the batch id of a features file, from its folder name

log = setup_logging(JOB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pca.py", description=__doc__.split("\n\n")[0])
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--features", help="the new features parquet URI(s), comma-separated")
    inputs.add_argument("--features-list", help="text file listing the new features parquet URIs, one per line")
    parser.add_argument("--output", required=True, help="PCA vectors parquet URI (partitioned by batch)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--k", type=int, help="number of components")
    size.add_argument("--variance", type=float,
                      help="smallest k reaching this cumulative explained variance (default 0.95)")
    parser.add_argument("--report", required=True, help="report JSON path or URI (the state files go beside it)")
    parser.add_argument("--model", help="where to save the space's model (default <output>_model)")
    parser.add_argument("--solver", choices=["batched", "spark-ml"], default="batched",
                        help="batched: covariance from one matrix product per Arrow batch (default); "
                             "spark-ml: Spark ML's PCA.fit, slower, same result (fits from scratch only)")
    parser.add_argument("--previous", help="folder of the previous run's state (its report's folder)")
    parser.add_argument("--history-list",
                        help="text file listing every committed batch's features URI; read only to refit")
    parser.add_argument("--refit", choices=pca_state.REFIT_CHOICES, default="auto",
                        help="auto: refit when the policy says so (default); always; never")
    parser.add_argument("--refit-angle", type=float, default=pca_state.DEFAULT_REFIT_ANGLE,
                        help="refit when the top-k subspace moved more than this many degrees (default 10)")
    parser.add_argument("--space-id", help="the id of the new space if this run refits (default: random)")
    parser.add_argument("--vectors-uri", help="where --output will be read from in the vectors list "
                                              "(default --output; the local backend publishes it elsewhere)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the scatter-plot sample")
    parser.add_argument("--allow-empty", action="store_true",
                        help="with 0 rows fitted so far, write empty outputs and a k=0 report instead of failing "
                             "(a pipeline whose images were all rejected so far)")
    args = parser.parse_args(argv)
    if args.k is None and args.variance is None:
        args.variance = 0.95
    if args.k is not None and args.k < 1:
        parser.error("--k must be at least 1")
    if args.variance is not None and not 0.0 < args.variance <= 1.0:
        parser.error("--variance must be in (0, 1]")
    if not 0.0 <= args.refit_angle <= 90.0:
        parser.error("--refit-angle must be in [0, 90]")
    if args.features is not None:
        args.features = [u.strip() for u in args.features.split(",") if u.strip()]
        if not args.features:
            parser.error("--features needs at least one URI")
    args.output = args.output.rstrip("/")
    args.model = args.model or args.output + "_model"
    args.vectors_uri = (args.vectors_uri or args.output).rstrip("/")
    args.space_id = args.space_id or f"space-{uuid.uuid4().hex[:12]}"
    args.state_dir = args.report.rsplit("/", 1)[0] if "/" in args.report else "."
    return args


def read_list(spark, uri: str, what: str, *, allow_empty: bool = False) -> list[str]:
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"{what} not found: {uri}")
    uris = [line.strip() for line in hadoop_fs.read_text(spark, uri).splitlines()
            if line.strip() and not line.startswith("#")]
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
    return frame.select("path", "label", "features", sha256.alias("sha256"),
                        F.when(batch == "", F.lit("input")).otherwise(batch).alias("batch"))


@dataclass
class Previous:
    """The previous run's state (`pca_state`): what this run merges with and projects into."""

    moments: moments.Moments
    basis: pca_state.Basis | None
    contents: np.ndarray
    vectors: list[str]
    rows: int  # vectors in the space


def read_previous(spark, folder: str | None) -> Previous | None:
    if not folder:
        return None
    folder = folder.rstrip("/")

    def read(name: str) -> bytes:
        uri = f"{folder}/{name}"
        if not hadoop_fs.exists(spark, uri):
            raise JobError(f"the previous state lacks {name}: {uri}")
        return hadoop_fs.read_bytes(spark, uri)

    report = json.loads(read(interface.PCA_REPORT))
    return Previous(moments=pca_state.moments_from_bytes(read(pca_state.MOMENTS)),
                    basis=pca_state.basis_from_bytes(read(pca_state.BASIS)),
                    contents=pca_state.digests_from_bytes(read(pca_state.CONTENTS)),
                    vectors=pca_state.vectors_list_lines(read(pca_state.VECTORS_LIST).decode("utf-8")),
                    rows=int(report["rows"]))


def contents_to_fit(spark, frame, index: np.ndarray):
    """(rows to fit, their new digests, rows skipped): one row per content not in `index`.

    Rows without a sha256 all count. The common case (no content seen before, none twice)
    keeps the frame as it is; otherwise one row per new content is kept by a window over the
    digest, which costs a shuffle of the scanned rows.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    digest = F.lower(F.substring("sha256", 1, 2 * pca_state.DIGEST_BYTES))
    counted = frame.where(F.col("sha256").isNotNull()).groupBy(digest.alias("digest")).count()
    import pyarrow as pa

    seen = moments.collect_as_arrow(counted, pa.schema([("digest", pa.string()), ("count", pa.int64())]))
    candidates = pca_state.digests(r["digest"] for r in seen)
    new = pca_state.novel(candidates, index)
    repeats = sum(r["count"] for r in seen) - len(seen)
    if len(new) == len(candidates) and not repeats:
        return frame, new, 0
    keep = spark.createDataFrame([(digest,) for digest in pca_state.to_hex(new)], "digest string")
    first = F.row_number().over(Window.partitionBy("digest").orderBy("path"))
    hashed = frame.where(F.col("sha256").isNotNull()).withColumn("digest", digest) \
        .join(F.broadcast(keep), "digest", "left_semi").withColumn("first", first) \
        .where(F.col("first") == 1).drop("digest", "first")
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
        raise JobError(f"{stats.bad_vectors} of {stats.rows} features vectors contain NaN, infinite or "
                       "null values")
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


def scatter_sample(spark, output: str, rows: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Up to SCATTER_POINTS (first two components, label) pairs from the written vectors."""
    from pyspark.sql import functions as F

    fraction = min(1.0, SCATTER_POINTS / max(rows, 1))
    sample = spark.read.parquet(output).sample(fraction=fraction, seed=seed).limit(SCATTER_POINTS) \
        .select("label", F.slice("pca_features", 1, 2).alias("xy")).collect()
    points = np.array([r.xy for r in sample], dtype=float).reshape(len(sample), -1)
    return points, [r.label for r in sample]


def write_state(spark, args, merged: moments.Moments, basis: pca_state.Basis | None, contents: np.ndarray,
                vectors: list[str]) -> dict[str, str]:
    """The files the next run starts from, beside the report."""
    files = {pca_state.MOMENTS: pca_state.moments_to_bytes(merged),
             pca_state.BASIS: pca_state.basis_to_bytes(
                 basis or pca_state.Basis("", np.zeros(0), np.zeros((0, 0)))),
             pca_state.CONTENTS: pca_state.digests_to_bytes(contents),
             pca_state.VECTORS_LIST: pca_state.vectors_list_text(vectors).encode("utf-8")}
    uris = {}
    for name, data in files.items():
        uris[name] = f"{args.state_dir}/{name}"
        hadoop_fs.write_bytes(spark, uris[name], data)
    return uris


def write_empty(spark, args, started: float, merged: moments.Moments, contents: np.ndarray) -> dict:
    """Empty vectors and a k=0 report: nothing to fit yet, and that is not an error."""
    spark.createDataFrame([], pca_model.PROJECTED_SCHEMA).write.mode("overwrite").parquet(args.output)
    write_state(spark, args, merged, None, contents, [])
    report = pca_report.build_report(
        rows=0, input_dim=0, k=0, ratios=[], inputs=args.features, output=args.output, model=None,
        target_variance=args.variance, labels=0, seconds=time.perf_counter() - started, plots={})
    report.update(mode="refit", space_id=None, vectors_list=f"{args.state_dir}/{pca_state.VECTORS_LIST}",
                  new_rows=0, fitted_rows=0, duplicates_skipped=0, projected_batches={}, refit=None)
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    print(f"{JOB}: rows=0 input_dim=0 k=0 explained_variance_total=0.0000 mode=refit seconds={report['seconds']}",
          flush=True)
    return report


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    spark = create_session("fruits-pca", unless_submitted(pca_model.SESSION_DEFAULTS))
    # The Arrow functions run in Spark's Python workers. No warm-up job (featurize.py has one):
    # here it only competes with the first scan for the task slots (slower in A/B runs).
    ship_package(spark)
    if args.features_list:
        args.features = read_list(spark, args.features_list, "features list")
    previous = read_previous(spark, args.previous)
    history = read_list(spark, args.history_list, "history list", allow_empty=True) if args.history_list else []
    history = [uri for uri in history if uri.rstrip("/") not in {u.rstrip("/") for u in args.features}]
    if previous is not None and args.solver == "spark-ml":
        raise JobError("--solver spark-ml fits from scratch: it cannot be combined with --previous")
    new = read_features(spark, args.features)
    # Without a previous state the history is fitted too (from scratch); with one, only the new data.
    scanned = new if previous is not None or not history else read_features(spark, history + args.features)
    index = previous.contents if previous is not None else pca_state.empty_digests()
    fitted_frame, new_contents, skipped = contents_to_fit(spark, scanned, index)
    log.info("scanning %d dataset(s): checks, row count, mean and covariance (%d known or repeated "
             "content(s) skipped)", len(args.features) if previous is not None else len(history) + len(args.features),
             skipped)
    phase = time.perf_counter()
    stats = moments.compute(fitted_frame)
    log.info("scanned in %.1f s", time.perf_counter() - phase)
    if stats.rows:
        check(stats)
    merged = previous.moments.merge(stats) if previous is not None else stats
    contents = pca_state.union(index, new_contents)
    if not merged.rows and args.allow_empty:
        log.info("no features rows yet: writing empty outputs (--allow-empty)")
        return write_empty(spark, args, started, merged, contents)
    rows_fitted, dim = check(merged)
    log.info("%d distinct contents of %d features fitted so far (%d new)", rows_fitted, dim, stats.rows)
    if args.k is not None and args.k > dim:
        raise JobError(f"--k {args.k} is larger than the feature dimension {dim}")

    spectrum, components = fit(fitted_frame, merged, args.solver)
    current = previous.basis if previous is not None else None
    try:
        decision = pca_state.decide(current=current, covariance=merged.covariance(), ratios=spectrum,
                                    components=components, k_requested=args.k, variance_target=args.variance,
                                    requested=args.refit, threshold_degrees=args.refit_angle)
    except pca_state.PolicyError as exc:
        raise JobError(str(exc)) from None
    log.info("%s: %s", "refit" if decision.refit else "project only", decision.reason)
    if decision.refit and previous is not None and previous.rows and not args.history_list:
        raise JobError(f"a refit re-projects every committed batch ({decision.reason}): --history-list is needed")
    if decision.refit:  # a new space: every batch re-projected (read again only when not just scanned)
        basis = pca_state.Basis(args.space_id, merged.mean, np.ascontiguousarray(components[:, :decision.k]))
        projected_frame = scanned if previous is None else read_features(spark, history + args.features)
        kept_lists = []
    else:  # the current space: the new batch only, listed after the committed ones
        basis, projected_frame, kept_lists = current, new, list(previous.vectors)
    k = basis.k
    ratios = pca_state.captured_ratios(basis.components, merged.covariance()).tolist()
    log.info("%d components keep %.4f of the variance", k, sum(ratios))

    # The projection and the model's small save jobs (it needs only the basis) run from side
    # threads, in that order, so the save takes task slots as the projection frees them. The
    # plots stay in this thread (pyplot is not thread-safe): the scree plot is drawn meanwhile.
    bc_basis = spark.sparkContext.broadcast((basis.mean, basis.components))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fruits-pca") as side:
        order = [pca_state.batch_id_of(uri, "input") for uri in (history if decision.refit else []) + args.features]
        written = side.submit(write_vectors, projected_frame, bc_basis, args.output, order)
        saved = side.submit(save_model, spark, args.model, basis.mean, basis.components, ratios)
        plots = interface.plot_uris(args.report)
        hadoop_fs.write_bytes(spark, plots["scree"],
                              pca_report.scree_png(spectrum.tolist(), target=args.variance, shown=k))
        batches = written.result()
        projected_rows = sum(batches.values())
        points, labels = scatter_sample(spark, args.output, projected_rows, args.seed) if projected_rows \
            else (np.zeros((0, 2)), [])  # a batch whose images were all rejected: nothing new to show
        hadoop_fs.write_bytes(spark, plots["scatter"], pca_report.scatter_png(points, labels, ratios[:k]))
        saved.result()
    bc_basis.unpersist()
    vectors = kept_lists + [f"{args.vectors_uri}/batch={b}/" for b in batches]
    state_files = write_state(spark, args, merged, basis, contents, vectors)
    rows = projected_rows if decision.refit else previous.rows + projected_rows
    report = pca_report.build_report(
        rows=rows, input_dim=dim, k=k, ratios=ratios, inputs=args.features, output=args.output,
        model=args.model, target_variance=args.variance, labels=len(stats.labels),
        seconds=time.perf_counter() - started, plots=plots)
    report.update(mode="refit" if decision.refit else "project", space_id=basis.space_id,
                  refit=decision.to_dict(), new_rows=int(new.count()), fitted_rows=merged.rows,
                  new_contents=len(new_contents), duplicates_skipped=skipped, projected_batches=batches,
                  projected_rows=projected_rows, vectors_list=state_files[pca_state.VECTORS_LIST],
                  history_datasets=len(history) if decision.refit or previous is None else 0)
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    angle = "none" if decision.max_angle_degrees is None else f"{decision.max_angle_degrees:.2f}"
    print(f"{JOB}: rows={rows} input_dim={dim} k={k} explained_variance_total="
          f"{report['explained_variance_total']:.4f} mode={report['mode']} angle={angle} "
          f"projected={projected_rows} seconds={report['seconds']}", flush=True)
    return report


def write_vectors(frame, bc_basis, output: str, order: list[str]) -> dict[str, int]:
    """Pass 2: the centred vectors projected on the broadcast basis, one matrix product per batch,
    written under <output>/batch=<id>/; returns the rows written per batch, in `order` (the
    inputs' order; batches without rows have no folder and are left out)."""
    from pyspark.sql import functions as F

    phase = time.perf_counter()
    projected = frame.select("path", "label", "features", "batch") \
        .mapInArrow(pca_model.projector(bc_basis), pca_model.PROJECTED_BATCH_SCHEMA)
    pca_model.projected_writer(projected).partitionBy("batch").parquet(output)
    counts = {r["batch"]: r["count"] for r in frame.groupBy("batch").agg(F.count(F.lit(1)).alias("count")).collect()}
    log.info("wrote %s in %.1f s", output, time.perf_counter() - phase)
    ranked = {batch: i for i, batch in enumerate(order)}
    return {b: counts[b] for b in sorted(counts, key=lambda b: (ranked.get(b, len(ranked)), b)) if counts[b]}


def save_model(spark, uri: str, mean: np.ndarray, basis: np.ndarray, ratios: list[float]) -> None:
    pca_model.spark_ml_pipeline(spark, mean, basis, ratios).write().overwrite().save(uri)
    log.info("saved the model %s", uri)


def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
