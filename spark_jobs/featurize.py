"""Featurize fruit images: MobileNetV2 (headless, average-pooled) -> 1280 floats per image.

    spark-submit spark_jobs/featurize.py (--images URI | --manifest URI) --output URI --rejects URI \
        [--weights imagenet|none|URI] [--runtime onnx|openvino|tensorflow] [--image-size 224] [--batch-size 64]

Inputs are read with Spark's binaryFile source from a local path, file:// or s3:// (EMR).
A manifest named *.jsonl (the DAG's) lists entries {"source", "read", "label"}: each output row's
path is `source`, its label the manifest's (null: unlabelled), its bytes come from `read`. A text
manifest (one URI a line) and --images take the label from the image's parent folder name.
Accepted types: fruits_spark.interface.IMAGE_EXTENSIONS (docs/formats.md).

Keras is the source of the network and of its weights; the driver builds the model once and
converts it for the inference runtime (`fruits_spark.inference`: ONNX Runtime by default,
OpenVINO, or TensorFlow itself). The
converted model (or, for TensorFlow, the weights) reaches the executors only as a Spark
broadcast variable; each Python worker builds its predictor once and keeps it for all of its
batches (`predict_batch_udf`'s model cache). Workers of the ONNX Runtime and OpenVINO runtimes
never import TensorFlow.

With `--model-cache FOLDER` (the DAG passes `s3://<bucket>/models/converted/` on both backends)
a converted model is kept between jobs under a key of everything that shapes it
(`fruits_spark.model_cache`): only the first job of a deployment, or of new weights, size,
runtime or library versions, pays for TensorFlow and the conversion.

Start-up work runs side by side: the driver builds and converts the model in a child process
(`fruits_spark.model_loader`; TensorFlow never enters the driver itself) while Spark lists the
inputs (`fruits_spark.image_inputs`) and the Python workers import the runtime
(`inference.prepare_worker`). A model that cannot be loaded or converted (a
corrupt weights file, an unsupported operation) or a runtime that is not installed ends the job
with one line and exit status 2 before any image is featurized.

Each task gets `spark.task.cpus` cores and runs the runtime with that many threads. Unless set
(`spark-submit --conf spark.task.cpus=N`), the job asks for min(2, cores of an executor): one
worker with 2 threads was as fast as two workers with 1 thread each on an idle 2-core machine
and faster when other processes wanted CPU, with one runtime and one model copy less.

Every manifest entry (or image file under --images) ends up in exactly one of the two outputs:
  --output   parquet: path, label, features (array<float>, 1280), width, height, size_bytes, sha256
  --rejects  parquet: path, label, reason, size_bytes
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import Counter

from fruits_spark import hadoop_fs, image_inputs, inference
from fruits_spark.binary_files import partition_count
from fruits_spark.featurizer import FEATURES_SCHEMA, featurize_udf, write_features
from fruits_spark.image_inputs import Inputs
from fruits_spark.images import DEFAULT_MAX_PIXELS
from fruits_spark.model import MIN_IMAGE_SIZE
from fruits_spark.model_loader import DriverModel
from fruits_spark.runtime import (
    JobError,
    create_session,
    executor_cores,
    exit_on_job_error,
    local_frame,
    setup_logging,
    ship_package,
    submitted_conf,
    task_slots,
    warm_up_python_workers,
)

JOB = "featurize"
# Cores (= inference threads) per featurize task when spark.task.cpus is not set.
DEFAULT_TASK_CPUS = 2
REJECTS_SCHEMA = [("path", "string"), ("label", "string"), ("reason", "string"), ("size_bytes", "bigint")]

log = setup_logging(JOB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="featurize.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder or prefix, read recursively")
    source.add_argument(
        "--manifest", help="*.jsonl: one {source, read, label} object per line; any other name: one image URI per line"
    )
    parser.add_argument("--output", required=True, help="features parquet URI")
    parser.add_argument("--rejects", required=True, help="rejects parquet URI")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | URI of a Keras weights file")
    parser.add_argument("--image-size", type=int, default=224, help="model input size in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images above this many pixels (default {DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of --weights none (default 42)")
    parser.add_argument(
        "--model-cache",
        default=None,
        help="folder (local, file:// or s3://) keeping converted models between jobs: "
        "only a job whose weights, size, runtime or library versions are new converts",
    )
    parser.add_argument(
        "--runtime",
        choices=list(inference.RUNTIMES),
        default=inference.DEFAULT_RUNTIME,
        help=f"inference runtime of the executors (default {inference.DEFAULT_RUNTIME}; "
        "all compute in float32 and give the Keras model's features)",
    )
    args = parser.parse_args(argv)
    if args.image_size < MIN_IMAGE_SIZE:
        parser.error(f"--image-size must be at least {MIN_IMAGE_SIZE} (MobileNetV2's smallest input)")
    if args.batch_size < 1:
        parser.error("--batch-size must be positive")
    return args


def session_conf(batch_size: int) -> dict[str, str]:
    """Settings of the featurize session, spark.task.cpus only where spark-submit did not set it."""
    conf = {
        # One Arrow batch = one model batch; the content column is small (compressed images).
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_size),
        "spark.python.worker.reuse": "true",
        # createDataFrame(pandas) through Arrow, in the JVM (see runtime.local_frame).
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # A file deleted between the listing and its read gives no row, and a reject with the
        # reason (`image_inputs.missing_entries`), instead of failing the job.
        "spark.sql.files.ignoreMissingFiles": "true",
    }
    submitted = submitted_conf()
    if not submitted.contains("spark.task.cpus"):
        cores = executor_cores(submitted)
        if cores and cores > 1:
            conf["spark.task.cpus"] = str(min(DEFAULT_TASK_CPUS, cores))
    return conf


def start(args: argparse.Namespace) -> tuple[object, DriverModel]:
    """(session, model being prepared): the model is built and converted in a child process while
    Spark starts and the Python workers import the runtime. Fails before any Spark work when this
    driver cannot convert for the runtime (the workers check again)."""
    try:
        inference.require(args.runtime, converting=True)
    except inference.RuntimeUnavailable as exc:
        raise JobError(str(exc)) from None
    model = DriverModel(args.weights, args.image_size, args.seed, args.runtime, args.model_cache)
    spark = create_session("fruits-featurize", session_conf(args.batch_size))
    ship_package(spark)
    model.check_remote_cache(spark)
    warm_up_python_workers(
        spark,
        functools.partial(inference.prepare_worker, args.runtime, args.image_size),
        hold=1.0,
        started=f"are importing runtime {args.runtime} while the driver prepares the model",
    )
    return spark, model


def featurize_and_write(spark, args: argparse.Namespace, inputs: Inputs, bc_model) -> list[tuple]:
    """Write the features parquet in one pass; return the reject rows of the images that failed to
    decode, and of the entries Spark returned no row for (a file deleted since the listing)."""
    if not inputs.readable:
        local_frame(spark, [], FEATURES_SCHEMA).write.mode("overwrite").parquet(args.output)
        return []
    slots = task_slots(spark)
    log.info(
        "featurizing %d images in ~%d partitions (%d task slots of %s core(s)) on %s, batch %d, %dpx",
        inputs.readable,
        partition_count(inputs.readable, slots),
        slots,
        spark.conf.get("spark.task.cpus", "1"),
        args.runtime,
        args.batch_size,
        args.image_size,
    )
    rows, undecodable = write_features(
        inputs.images, featurize_udf(bc_model, args.batch_size, args.max_pixels), args.output
    )
    log.info("features written")
    if rows >= inputs.readable:  # more would be a bug: `account` stops the job on it
        return undecodable
    returned = Counter(r.path for r in spark.read.parquet(args.output).select("path").collect())
    returned.update(row[0] for row in undecodable)
    missing = image_inputs.missing_entries(inputs.expected, returned)
    log.warning("%d listed file(s) gave no row (deleted since the listing?): rejected", len(missing))
    return undecodable + image_inputs.unread_rejects(spark, missing, inputs.lengths)


def write_rejects(spark, args: argparse.Namespace, inputs: Inputs, undecodable: list[tuple]) -> None:
    """One small parquet file: the rejects found before reading, then those the model's batches gave."""
    rows = inputs.rejects + undecodable
    local_frame(spark, rows, REJECTS_SCHEMA).coalesce(1).write.mode("overwrite").parquet(args.rejects)
    log.info("rejects written")


def account(spark, args: argparse.Namespace, inputs: Inputs, started: float) -> dict:
    """Count both outputs, check that every input file is in exactly one, print the summary."""
    featured_rows = spark.read.parquet(args.output).count()
    rejected_rows = spark.read.parquet(args.rejects).count()
    seconds = time.perf_counter() - started
    summary = {
        "images_read": inputs.files,
        "featurized": featured_rows,
        "rejected": rejected_rows,
        "runtime": args.runtime,
        "seconds": round(seconds, 2),
        "images_per_s": round(featured_rows / seconds, 2) if seconds else 0.0,
    }
    if featured_rows + rejected_rows != inputs.files:  # never lose a file silently
        raise JobError(
            f"accounting mismatch: {featured_rows} featurized + {rejected_rows} rejected != {inputs.files} input files"
        )
    print(f"{JOB}: " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    return summary


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    spark, model = start(args)
    inputs = image_inputs.plan(spark, manifest_uri=args.manifest, images_uri=args.images)
    try:
        # A failed load or conversion ends the job here, before any image is featurized.
        bc_model = spark.sparkContext.broadcast(model.result(spark))
        # The warm-up job is not waited for: jobs get the task slots in the order they were
        # submitted (FIFO), so the featurize tasks take over the slots, and their warmed Python
        # workers, as the warm-up tasks end, while the driver plans the job meanwhile.
        undecodable = featurize_and_write(spark, args, inputs, bc_model)
    finally:
        if inputs.scratch:
            hadoop_fs.delete(spark, inputs.scratch)
    write_rejects(spark, args, inputs, undecodable)
    return account(spark, args, inputs, started)


def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
