"""PCA of image features with Spark ML, projected exactly like classical (centred) PCA.

    spark-submit spark_jobs/pca.py (--features URI[,URI...] | --features-list URI) --output URI \
        (--k N | --variance 0.95) --report PATH_OR_URI [--model URI]

Reads one or more features parquet datasets (path, label, features array<float>), converts
the arrays to ML vectors in the JVM (`array_to_vector`, no Python UDF), centres them
(`StandardScaler(withMean=True, withStd=False)`: Spark's `PCAModel.transform` does not
subtract the mean) and fits `PCA`. Writes:
  --output  parquet: path, label, pca_features (array<double>, k)
  --model   the fitted PipelineModel (centring + PCA), default `<output>_model`
  --report  JSON (rows, input_dim, k, explained_variance, cumulative_explained_variance, ...)
            with `<report>_scree.png` and `<report>_scatter.png` beside it
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from fruits_spark import hadoop_fs, pca_report
from fruits_spark.runtime import JobError, create_session, exit_on_job_error, setup_logging

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
    spark.createDataFrame([], "path string, label string, pca_features array<double>") \
        .write.mode("overwrite").parquet(args.output)
    report = pca_report.build_report(
        rows=0, input_dim=0, k=0, ratios=[], inputs=args.features, output=args.output, model=None,
        target_variance=args.variance, labels=0, seconds=time.perf_counter() - started, plots={})
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    print(f"{JOB}: rows=0 input_dim=0 k=0 explained_variance_total=0.0000 seconds={report['seconds']}", flush=True)
    return report


def check_dimensions(frame) -> tuple[int, int]:
    """(rows, dimension), or a JobError for empty input, missing vectors or mixed lengths."""
    from pyspark.sql import functions as F

    stats = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("features").isNull(), 1).otherwise(0)).alias("nulls"),
        F.min(F.size("features")).alias("min_dim"),
        F.max(F.size("features")).alias("max_dim"),
        F.sum(F.when(F.exists("features", lambda v: F.isnan(v) | v.isNull()), 1).otherwise(0)).alias("bad"),
    ).first()
    if not stats.rows:
        raise JobError("the features input is empty (0 rows): nothing to fit")
    if stats.nulls:
        raise JobError(f"{stats.nulls} of {stats.rows} rows have no features vector")
    if stats.min_dim != stats.max_dim:
        raise JobError(f"features vectors have mixed lengths: from {stats.min_dim} to {stats.max_dim} values")
    if stats.bad:
        raise JobError(f"{stats.bad} of {stats.rows} features vectors contain NaN or null values")
    if stats.max_dim < 1:
        raise JobError("features vectors are empty (0 values)")
    return int(stats.rows), int(stats.max_dim)


def fit_pca(centred, k: int):
    from pyspark.ml.feature import PCA

    return PCA(k=k, inputCol="centred", outputCol="pca").fit(centred)


def run(args: argparse.Namespace) -> dict:
    from pyspark import StorageLevel
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    started = time.perf_counter()
    spark = create_session("fruits-pca")
    if args.features_list:
        args.features = read_features_list(spark, args.features_list)
    frame = read_features(spark, args.features)
    if args.allow_empty and frame.isEmpty():
        log.info("no features rows yet: writing empty outputs (--allow-empty)")
        return write_empty(spark, args, started)
    rows, dim = check_dimensions(frame)
    log.info("%d rows of %d features from %d input(s)", rows, dim, len(args.features))
    if args.k is not None and args.k > dim:
        raise JobError(f"--k {args.k} is larger than the feature dimension {dim}")

    vectors = frame.select("path", "label", array_to_vector("features").alias("vector")) \
        .persist(StorageLevel.MEMORY_AND_DISK)
    scaler = StandardScaler(withMean=True, withStd=False, inputCol="vector", outputCol="centred").fit(vectors)
    centred = scaler.transform(vectors)

    if args.k is not None:
        k = args.k
        model = fit_pca(centred, k)
        spectrum = list(model.explainedVariance.toArray())
    else:
        full = fit_pca(centred, dim)  # the whole spectrum, to pick k
        spectrum = list(full.explainedVariance.toArray())
        k = pca_report.smallest_k_for_variance(spectrum, args.variance)
        log.info("k = %d reaches %.4f of the variance (target %.4f)", k, sum(spectrum[:k]), args.variance)
        model = full if k == dim else fit_pca(centred, k)
    pipeline = PipelineModel(stages=[scaler, model])

    projected = pipeline.transform(vectors).select(
        "path", "label", vector_to_array("pca", "float64").alias("pca_features"))
    projected.write.mode("overwrite").parquet(args.output)
    pipeline.write().overwrite().save(args.model)
    log.info("wrote %s and the model %s", args.output, args.model)

    written = spark.read.parquet(args.output)
    fraction = min(1.0, SCATTER_POINTS / max(rows, 1))
    sample = written.sample(fraction=fraction, seed=args.seed).limit(SCATTER_POINTS) \
        .select("label", F.slice("pca_features", 1, 2).alias("xy")).collect()
    points = np.array([r.xy for r in sample], dtype=float).reshape(len(sample), -1)
    labels = [r.label for r in sample]
    label_count = written.select("label").distinct().count()

    stem = args.report[:-len(".json")] if args.report.endswith(".json") else args.report
    plots = {"scree": f"{stem}_scree.png", "scatter": f"{stem}_scatter.png"}
    hadoop_fs.write_bytes(spark, plots["scree"], pca_report.scree_png(spectrum, target=args.variance, shown=k))
    hadoop_fs.write_bytes(spark, plots["scatter"], pca_report.scatter_png(points, labels, spectrum[:k]))
    report = pca_report.build_report(
        rows=rows, input_dim=dim, k=k, ratios=spectrum, inputs=args.features, output=args.output,
        model=args.model, target_variance=args.variance, labels=label_count,
        seconds=time.perf_counter() - started, plots=plots)
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    vectors.unpersist()
    print(f"{JOB}: rows={rows} input_dim={dim} k={k} explained_variance_total="
          f"{report['explained_variance_total']:.4f} seconds={report['seconds']}", flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
