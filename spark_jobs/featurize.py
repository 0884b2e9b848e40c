"""Featurize fruit images: MobileNetV2 (headless, average-pooled) -> 1280 floats per image.

    spark-submit spark_jobs/featurize.py (--images URI | --manifest URI) \
        --output URI --rejects URI [--weights imagenet|none|URI] [--image-size 224] [--batch-size 64]

Inputs are read with Spark's binaryFile source from a local path, file:// or s3:// (EMR).
The label of an image is its parent folder name. The model weights are loaded once on the
driver and reach the executors only as a Spark broadcast variable; each Python worker builds
the network once and keeps it for all of its batches (`predict_batch_udf`'s model cache).

Every input file ends up in exactly one of the two outputs:
  --output   parquet: path, label, features (array<float>, 1280), width, height, size_bytes, sha256
  --rejects  parquet: path, label, reason, size_bytes
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from fruits_spark import hadoop_fs, paths
from fruits_spark.images import DEFAULT_MAX_PIXELS
from fruits_spark.model import FEATURE_DIM, MIN_IMAGE_SIZE
from fruits_spark.runtime import JobError, create_session, exit_on_job_error, setup_logging, ship_package

JOB = "featurize"
# One partition holds at most this many images, so that a lost task is cheap to redo.
MAX_IMAGES_PER_PARTITION = 2000

log = setup_logging(JOB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="featurize.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder or prefix, read recursively")
    source.add_argument("--manifest", help="text file with one image URI per line")
    parser.add_argument("--output", required=True, help="features parquet URI")
    parser.add_argument("--rejects", required=True, help="rejects parquet URI")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | URI of a Keras weights file")
    parser.add_argument("--image-size", type=int, default=224, help="model input size in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images above this many pixels (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--seed", type=int, default=42, help="seed of --weights none (default 42)")
    args = parser.parse_args(argv)
    if args.image_size < MIN_IMAGE_SIZE:
        parser.error(f"--image-size must be at least {MIN_IMAGE_SIZE} (MobileNetV2's smallest input)")
    if args.batch_size < 1:
        parser.error("--batch-size must be positive")
    return args


def read_manifest(spark, uri: str) -> list[str]:
    """Distinct canonical URIs of a manifest, in file order (blank lines and # comments skipped)."""
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"manifest not found: {uri}")
    entries: dict[str, None] = {}
    for line in hadoop_fs.read_text(spark, uri).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.setdefault(paths.canonical_uri(line))
    return list(entries)


def list_existing(spark, uris: list[str]) -> set[str]:
    """Which of `uris` exist: one (parallel) listing per parent folder, not one request per file."""
    if not uris:
        return set()
    parents = sorted({paths.parent_of(u) for u in uris})
    listing = spark.read.format("binaryFile").load([paths.escape_glob(p) for p in parents])
    listed = {paths.canonical_uri(f, encoded=True) for f in listing.inputFiles()}
    return listed.intersection(uris)


def plan_inputs(spark, args) -> tuple[list[str], list[tuple[str, str]]]:
    """Return (image files to read, rejects known before reading)."""
    if args.images:
        listing = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(args.images)
        files = sorted({paths.canonical_uri(f, encoded=True) for f in listing.inputFiles()})
        return [f for f in files if paths.is_image_path(f)], []
    entries = read_manifest(spark, args.manifest)
    existing = list_existing(spark, entries)
    to_read, rejects = [], []
    for uri in entries:
        if uri not in existing:
            rejects.append((uri, "file not found"))
        elif not paths.is_image_path(uri):
            rejects.append((uri, "unsupported file type (expected .jpg, .jpeg or .png)"))
        else:
            to_read.append(uri)
    return to_read, rejects


def unread_reason(spark, uri: str) -> str:
    """Why a listed file produced no row: Spark's file sources skip zero-byte files."""
    length = hadoop_fs.file_length(spark, uri)
    if length is None:
        return "file disappeared before it could be read"
    if length == 0:
        return "empty file (0 bytes)"
    return f"listed ({length} bytes) but not returned by Spark's binaryFile reader"


def featurize_udf(bc_weights, image_size: int, batch_size: int, max_pixels: int):
    """predict_batch_udf: content bytes -> struct(features, error, width, height).

    Decoding happens per model batch inside the worker, so memory holds one batch of pixels
    at a time whatever the partition size. A failed decode gives an error string, not a crash.
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

    def make_predict_fn():
        import os
        import sys
        import time

        import numpy as np

        from fruits_spark.images import ImageRejected, decode_rgb
        from fruits_spark.model import make_batch_predictor

        threads = int(os.environ.get("OMP_NUM_THREADS", "1"))  # Spark sets it to spark.task.cpus
        built = time.perf_counter()
        predictor = make_batch_predictor(bc_weights.value, image_size, threads)
        # Once per Python worker: predict_batch_udf caches this function for later tasks.
        print(f"featurize worker pid={os.getpid()}: built MobileNetV2 ({image_size}px, {threads} "
              f"thread(s)) in {time.perf_counter() - built:.1f}s", file=sys.stderr, flush=True)

        def predict(contents: np.ndarray) -> dict:
            n = len(contents)
            pixels = np.zeros((n, image_size, image_size, 3), dtype=np.uint8)
            decoded = np.zeros(n, dtype=bool)
            errors = np.empty(n, dtype=object)
            widths = np.zeros(n, dtype=np.int32)
            heights = np.zeros(n, dtype=np.int32)
            for i, data in enumerate(contents):
                try:
                    pixels[i], widths[i], heights[i] = decode_rgb(data, image_size, max_pixels)
                    decoded[i] = True
                except ImageRejected as exc:
                    errors[i] = str(exc)
            features = np.zeros((n, FEATURE_DIM), dtype=np.float32)
            if decoded.any():
                features[decoded] = predictor(pixels[decoded] if not decoded.all() else pixels)
            return {"features": features, "error": errors, "width": widths, "height": heights}

        return predict

    return_type = StructType([
        StructField("features", ArrayType(FloatType())),
        StructField("error", StringType()),
        StructField("width", IntegerType()),
        StructField("height", IntegerType()),
    ])
    return predict_batch_udf(make_predict_fn, return_type=return_type, batch_size=batch_size)


def run(args: argparse.Namespace) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    spark = create_session("fruits-featurize", {
        # One Arrow batch = one model batch; the content column is small (compressed images).
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(args.batch_size),
        "spark.python.worker.reuse": "true",
    })
    ship_package(spark)

    to_read, rejects = plan_inputs(spark, args)
    inputs = len(to_read) + len(rejects)
    log.info("%d input files: %d images to read, %d rejected before reading", inputs, len(to_read), len(rejects))

    from fruits_spark.model import load_weights

    weights = load_weights(args.weights, args.image_size, args.seed,
                           fetch_local=lambda uri: hadoop_fs.copy_to_local(spark, uri))
    bc_weights = spark.sparkContext.broadcast(weights)

    slots = spark.sparkContext.defaultParallelism
    partitions = slots * max(1, math.ceil(len(to_read) / (slots * MAX_IMAGES_PER_PARTITION)))
    # Pack files by count, not by bytes: `partitions` splits, about as many images in each.
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(1 << 40))
    spark.conf.set("spark.sql.files.minPartitionNum", str(partitions))

    reader = spark.read.format("binaryFile")
    if args.images:
        images = reader.option("recursiveFileLookup", "true").load(args.images) \
            .where(F.col("path").rlike(paths.IMAGE_PATH_REGEX))
    else:
        images = reader.load([paths.escape_glob(u) for u in to_read]) if to_read else None

    schema_rejects = "path string, label string, reason string, size_bytes long"
    if images is None:  # nothing readable: every input is a reject
        read_paths: set[str] = set()
    else:
        read_paths = {r.path for r in images.select("path").collect()}
    for uri in sorted(set(to_read) - read_paths):
        rejects.append((uri, unread_reason(spark, uri)))

    featurized = None
    if read_paths:
        log.info("featurizing %d images in ~%d partitions (%d task slots), batch %d, %dpx",
                 len(read_paths), partitions, slots, args.batch_size, args.image_size)
        udf = featurize_udf(bc_weights, args.image_size, args.batch_size, args.max_pixels)
        featurized = (
            images.select(
                "path",
                F.element_at(F.split("path", "/"), -2).alias("label"),
                F.col("length").alias("size_bytes"),
                F.sha2("content", 256).alias("sha256"),
                udf("content").alias("out"),
            )
            .select("path", "label", "size_bytes", "sha256", "out.*")
            .persist(StorageLevel.MEMORY_AND_DISK)
        )

    early = spark.createDataFrame(
        [(u, paths.label_of(u), reason, hadoop_fs.file_length(spark, u)) for u, reason in rejects],
        schema_rejects,
    )
    if featurized is not None:
        good = featurized.where(F.col("error").isNull()).select(
            "path", "label", "features", "width", "height", "size_bytes", "sha256")
        bad = featurized.where(F.col("error").isNotNull()).select(
            "path", "label", F.col("error").alias("reason"), "size_bytes")
        good.write.mode("overwrite").parquet(args.output)
        all_rejects = early.unionByName(bad)
    else:
        spark.createDataFrame([], "path string, label string, features array<float>, width int, "
                                  "height int, size_bytes long, sha256 string") \
            .write.mode("overwrite").parquet(args.output)
        all_rejects = early
    all_rejects.coalesce(1).write.mode("overwrite").parquet(args.rejects)

    featured_rows = spark.read.parquet(args.output).count()
    rejected_rows = spark.read.parquet(args.rejects).count()
    seconds = time.perf_counter() - started
    summary = {
        "images_read": inputs,
        "featurized": featured_rows,
        "rejected": rejected_rows,
        "seconds": round(seconds, 2),
        "images_per_s": round(featured_rows / seconds, 2) if seconds else 0.0,
    }
    if featured_rows + rejected_rows != inputs:  # never lose a file silently
        raise JobError(f"accounting mismatch: {featured_rows} featurized + {rejected_rows} rejected "
                       f"!= {inputs} input files")
    if featurized is not None:
        featurized.unpersist()
    print(f"{JOB}: " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
