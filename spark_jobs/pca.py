"""PCA of image features on Spark, projected exactly like classical (centred) PCA.

    spark-submit spark_jobs/pca.py (--features URI[,URI...] | --features-list URI) --output URI \
        (--k N | --variance 0.95) --report PATH_OR_URI [--model URI] [--solver batched|spark-ml]

Reads one or more features parquet datasets (path, label, features array<float>) and makes two
passes over them:
  1. one scan checks every vector (null, mixed lengths, NaN / infinite values) and computes the
     row count, mean and covariance, a matrix product per Arrow batch merged across the cluster
     (`fruits_spark.moments`); the driver eigendecomposes the d x d covariance. `--solver
     spark-ml` fits Spark ML's `PCA` instead: same result, much slower (a rank-1 update per row;
     docs/measurements.md);
  2. one scan projects the centred vectors on the first k components (Spark ML's
     `PCAModel.transform` alone would not centre them).
Writes:
  --output  parquet: path, label, pca_features (array<double>, k)
  --model   the fitted Spark ML PipelineModel (centring + PCA), default `<output>_model`
  --report  JSON (rows, input_dim, k, explained_variance, cumulative_explained_variance, ...)
            with `<report>_scree.png` and `<report>_scatter.png` beside it
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fruits_spark import hadoop_fs, interface, moments, pca_model, pca_report
from fruits_spark.runtime import (JobError, create_session, exit_on_job_error, setup_logging, ship_package,
                                  unless_submitted)

JOB = "pca"
SCATTER_POINTS = 5000

log = setup_logging(JOB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pca.py", description=__doc__.split("\n\n")[0])
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--features", help="features parquet URI(s), comma-separated")
    inputs.add_argument("--features-list", help="text file listing features parquet URIs, one per line")
    parser.add_argument("--output", required=True, help="PCA vectors parquet URI")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--k", type=int, help="number of components")
    size.add_argument("--variance", type=float,
                      help="smallest k reaching this cumulative explained variance (default 0.95)")
    parser.add_argument("--report", required=True, help="report JSON path or URI")
    parser.add_argument("--model", help="where to save the fitted model (default <output>_model)")
    parser.add_argument("--solver", choices=["batched", "spark-ml"], default="batched",
                        help="batched: covariance from one matrix product per Arrow batch (default); "
                             "spark-ml: Spark ML's PCA.fit, slower, same result")
    parser.add_argument("--seed", type=int, default=7, help="seed of the scatter-plot sample")
    parser.add_argument("--allow-empty", action="store_true",
                        help="with 0 input rows, write empty outputs and a k=0 report instead of failing "
                             "(a pipeline whose images were all rejected so far)")
    args = parser.parse_args(argv)
    if args.k is None and args.variance is None:
        args.variance = 0.95
    if args.k is not None and args.k < 1:
        parser.error("--k must be at least 1")
    if args.variance is not None and not 0.0 < args.variance <= 1.0:
        parser.error("--variance must be in (0, 1]")
    if args.features is not None:
        args.features = [u.strip() for u in args.features.split(",") if u.strip()]
        if not args.features:
            parser.error("--features needs at least one URI")
    args.model = args.model or args.output.rstrip("/") + "_model"
    return args


def read_features_list(spark, uri: str) -> list[str]:
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"features list not found: {uri}")
    uris = [line.strip() for line in hadoop_fs.read_text(spark, uri).splitlines()
            if line.strip() and not line.startswith("#")]
    if not uris:
        raise JobError(f"features list is empty: {uri}")
    return uris


def read_features(spark, uris: list[str]):
    for uri in uris:
        if not hadoop_fs.exists(spark, uri):
            raise JobError(f"features not found: {uri}")
    frame = spark.read.parquet(*uris)
    missing = {"path", "label", "features"} - set(frame.columns)
    if missing:
        raise JobError(f"features input lacks column(s) {sorted(missing)}: {', '.join(uris)}")
    return frame.select("path", "label", "features")


def write_empty(spark, args, started: float) -> dict:
    """Empty vectors and a k=0 report: nothing to fit yet, and that is not an error."""
    spark.createDataFrame([], pca_model.PROJECTED_SCHEMA) \
        .write.mode("overwrite").parquet(args.output)
    report = pca_report.build_report(
        rows=0, input_dim=0, k=0, ratios=[], inputs=args.features, output=args.output, model=None,
        target_variance=args.variance, labels=0, seconds=time.perf_counter() - started, plots={})
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    print(f"{JOB}: rows=0 input_dim=0 k=0 explained_variance_total=0.0000 seconds={report['seconds']}", flush=True)
    return report


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


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    spark = create_session("fruits-pca", unless_submitted(pca_model.SESSION_DEFAULTS))
    # The Arrow functions run in Spark's Python workers. No warm-up job (featurize.py has one):
    # here it only competes with the first scan for the task slots (slower in A/B runs).
    ship_package(spark)
    if args.features_list:
        args.features = read_features_list(spark, args.features_list)
    frame = read_features(spark, args.features)
    log.info("scanning %d input(s): checks, row count, mean and covariance", len(args.features))
    phase = time.perf_counter()
    stats = moments.compute(frame)
    log.info("scanned in %.1f s", time.perf_counter() - phase)
    if not stats.rows and args.allow_empty:
        log.info("no features rows yet: writing empty outputs (--allow-empty)")
        return write_empty(spark, args, started)
    rows, dim = check(stats)
    log.info("%d rows of %d features, %d labels", rows, dim, len(stats.labels))
    if args.k is not None and args.k > dim:
        raise JobError(f"--k {args.k} is larger than the feature dimension {dim}")

    spectrum, components = fit(frame, stats, args.solver)
    ratios = spectrum.tolist()
    if args.k is not None:
        k = args.k
    else:
        k = pca_report.smallest_k_for_variance(ratios, args.variance)
        log.info("k = %d reaches %.4f of the variance (target %.4f)", k, sum(ratios[:k]), args.variance)
    log.info("fitted (%s): %d components keep %.4f of the variance", args.solver, k, sum(ratios[:k]))
    basis = np.ascontiguousarray(components[:, :k])

    # The projection and the model's small save jobs (it needs only the fit) run from side
    # threads, in that order, so the save takes task slots as the projection frees them. The
    # plots stay in this thread (pyplot is not thread-safe): the scree plot is drawn meanwhile.
    bc_basis = spark.sparkContext.broadcast((stats.mean, basis))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fruits-pca") as side:
        written = side.submit(write_vectors, frame, bc_basis, args.output)
        saved = side.submit(save_model, spark, args.model, stats.mean, basis, ratios)
        plots = interface.plot_uris(args.report)
        hadoop_fs.write_bytes(spark, plots["scree"], pca_report.scree_png(ratios, target=args.variance, shown=k))
        written.result()
        points, labels = scatter_sample(spark, args.output, rows, args.seed)
        hadoop_fs.write_bytes(spark, plots["scatter"], pca_report.scatter_png(points, labels, ratios[:k]))
        saved.result()
    bc_basis.unpersist()
    report = pca_report.build_report(
        rows=rows, input_dim=dim, k=k, ratios=ratios, inputs=args.features, output=args.output,
        model=args.model, target_variance=args.variance, labels=len(stats.labels),
        seconds=time.perf_counter() - started, plots=plots)
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    print(f"{JOB}: rows={rows} input_dim={dim} k={k} explained_variance_total="
          f"{report['explained_variance_total']:.4f} seconds={report['seconds']}", flush=True)
    return report


def write_vectors(frame, bc_basis, output: str) -> None:
    """Pass 2: the centred vectors projected on the broadcast basis, one matrix product per batch."""
    phase = time.perf_counter()
    projected = frame.select("path", "label", "features") \
        .mapInArrow(pca_model.projector(bc_basis), pca_model.PROJECTED_SCHEMA)
    pca_model.projected_writer(projected).parquet(output)
    log.info("wrote %s in %.1f s", output, time.perf_counter() - phase)


def save_model(spark, uri: str, mean: np.ndarray, basis: np.ndarray, ratios: list[float]) -> None:
    pca_model.spark_ml_pipeline(spark, mean, basis, ratios).write().overwrite().save(uri)
    log.info("saved the model %s", uri)




def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
