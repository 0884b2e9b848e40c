"""Featurize fruit images: MobileNetV2 (headless, average-pooled) -> 1280 floats per image.

    spark-submit spark_jobs/featurize.py (--images URI | --manifest URI) --output URI --rejects URI \
        [--weights imagenet|none|URI] [--runtime onnx|openvino|tensorflow] [--image-size 224] [--batch-size 64]

Inputs are read with Spark's binaryFile source from a local path, file:// or s3:// (EMR).
The label of an image is its parent folder name. Keras is the source of the network and of its
weights; the driver builds the model once and converts it for the inference runtime
(`fruits_spark.inference`: ONNX Runtime by default, OpenVINO, or TensorFlow itself). The
converted model (or, for TensorFlow, the weights) reaches the executors only as a Spark
broadcast variable; each Python worker builds its predictor once and keeps it for all of its
batches (`predict_batch_udf`'s model cache). Workers of the ONNX Runtime and OpenVINO runtimes
never import TensorFlow.

Start-up work runs side by side: the driver builds and converts the model in a child process
(TensorFlow never enters the driver itself) while Spark lists the inputs and the Python workers
import the runtime (`inference.prepare_worker`). A model that cannot be loaded or converted (a
corrupt weights file, an unsupported operation) or a runtime that is not installed ends the job
with one line and exit status 2 before any image is featurized.

Each task gets `spark.task.cpus` cores and runs the runtime with that many threads. Unless set
(`spark-submit --conf spark.task.cpus=N`), the job asks for min(2, cores of an executor): one
worker with 2 threads was as fast as two workers with 1 thread each on an idle 2-core machine
and faster when other processes wanted CPU, with one runtime and one model copy less.

Every input file ends up in exactly one of the two outputs:
  --output   parquet: path, label, features (array<float>, 1280), width, height, size_bytes, sha256
  --rejects  parquet: path, label, reason, size_bytes
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass

import pandas as pd

from pyspark.sql import Observation
from pyspark.sql import functions as F

from fruits_spark import hadoop_fs, inference, paths
from fruits_spark.images import DEFAULT_MAX_PIXELS
from fruits_spark.interface import FEATURE_DIM
from fruits_spark.model import MIN_IMAGE_SIZE
from fruits_spark.runtime import (JobError, create_session, exit_on_job_error, setup_logging, ship_package,
                                  submitted_conf, task_slots, warm_up_python_workers)

JOB = "featurize"
# One partition holds at most this many images, so that a lost task is cheap to redo.
MAX_IMAGES_PER_PARTITION = 2000
# Cores (= TensorFlow threads) per featurize task when spark.task.cpus is not set.
DEFAULT_TASK_CPUS = 2
FEATURES_SCHEMA = [("path", "string"), ("label", "string"), ("features", "array<float>"), ("width", "int"),
                   ("height", "int"), ("size_bytes", "bigint"), ("sha256", "string")]
REJECTS_SCHEMA = [("path", "string"), ("label", "string"), ("reason", "string"), ("size_bytes", "bigint")]

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
    parser.add_argument("--runtime", choices=list(inference.RUNTIMES), default=inference.DEFAULT_RUNTIME,
                        help=f"inference runtime of the executors (default {inference.DEFAULT_RUNTIME}; "
                             "all compute in float32 and give the Keras model's features)")
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


def plan_inputs(spark, args, manifest: list[str] | None):
    """Return (image files to read, rejects known before reading, the images DataFrame or None).

    With --images the folder is listed once: the same DataFrame (and file listing) is read later.
    """
    if args.images:
        listing = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(args.images)
        files = sorted({paths.canonical_uri(f, encoded=True) for f in listing.inputFiles()})
        return [f for f in files if paths.is_image_path(f)], [], \
            listing.where(F.col("path").rlike(paths.IMAGE_PATH_REGEX))
    existing = list_existing(spark, manifest)
    to_read, rejects = [], []
    for uri in manifest:
        if uri not in existing:
            rejects.append((uri, "file not found"))
        elif not paths.is_image_path(uri):
            rejects.append((uri, "unsupported file type (expected .jpg, .jpeg or .png)"))
        else:
            to_read.append(uri)
    images = spark.read.format("binaryFile").load([paths.escape_glob(u) for u in to_read]) if to_read else None
    return to_read, rejects, images


def local_frame(spark, rows: list[tuple], schema: list[tuple[str, str]]):
    """A small DataFrame of driver-side rows, built without Python workers.

    `createDataFrame(list)` would go through a Python RDD: one more pool of Python workers,
    started only to hand back a few rows when the rejects are written. Rows go to the JVM as
    Arrow instead, and no rows is an empty range.
    """
    if not rows:
        return spark.range(0).select(*[F.lit(None).cast(kind).alias(name) for name, kind in schema])
    frame = pd.DataFrame.from_records(rows, columns=[name for name, _ in schema])
    return spark.createDataFrame(frame, ", ".join(f"`{name}` {kind}" for name, kind in schema))


def unread_reason(spark, uri: str) -> str:
    """Why a listed file produced no row: Spark's file sources skip zero-byte files."""
    length = hadoop_fs.file_length(spark, uri)
    if length is None:
        return "file disappeared before it could be read"
    if length == 0:
        return "empty file (0 bytes)"
    return f"listed ({length} bytes) but not returned by Spark's binaryFile reader"


def executor_cores(conf) -> int | None:
    """Cores of one executor as far as the submitted configuration tells (None: unknown)."""
    master = conf.get("spark.master", "local[*]")
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if local:
        count = local.group(1)
        if count is None:
            return 1
        return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) \
            if count == "*" else int(count)
    if master.startswith("local-cluster"):
        return None
    cores = conf.get("spark.executor.cores", None)
    return int(cores) if cores and cores.isdigit() else None


def session_conf(batch_size: int) -> dict[str, str]:
    """Settings of the featurize session, spark.task.cpus only where spark-submit did not set it."""
    conf = {
        # One Arrow batch = one model batch; the content column is small (compressed images).
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_size),
        "spark.python.worker.reuse": "true",
        # createDataFrame(pandas) through Arrow, in the JVM (see local_frame).
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    submitted = submitted_conf()
    if not submitted.contains("spark.task.cpus"):
        cores = executor_cores(submitted)
        if cores and cores > 1:
            conf["spark.task.cpus"] = str(min(DEFAULT_TASK_CPUS, cores))
    return conf


def _load_model_child(conn, spec: str, image_size: int, seed: int, runtime: str, name: str) -> None:
    try:
        from fruits_spark import inference
        from fruits_spark.model import WeightsError, load_model

        try:
            conn.send(("ok", inference.convert(load_model(spec, image_size, seed, name), runtime, image_size), ""))
        except (WeightsError, inference.ConversionError, inference.RuntimeUnavailable) as exc:
            conn.send(("error", str(exc), ""))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        message = next((line.strip() for line in str(exc).splitlines() if line.strip()), "(no message)")
        conn.send(("error", f"loading the model failed: {type(exc).__name__}: {message[:300]}",
                   traceback.format_exc()))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # nothing to clean up: skip TensorFlow's slow interpreter teardown


class ModelLoader:
    """The Keras model built and converted for the runtime in a child process, so that the driver
    goes on with Spark meanwhile.

    TensorFlow's import, the model build and the conversion take several seconds of one core;
    in a child they overlap with the listing and with the workers' own start-up, and the
    driver's memory stays free of TensorFlow. A daemon child: it is stopped if the driver exits
    early. `result()` gives the `PortableModel` to broadcast, or raises a one-line JobError.
    """

    def __init__(self, spec: str, image_size: int, seed: int, runtime: str, name: str | None = None):
        self.spec = spec
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=False)
        self._process = context.Process(target=_load_model_child, name="fruits-model", daemon=True,
                                        args=(child_conn, spec, image_size, seed, runtime, name or spec))
        self._process.start()
        child_conn.close()

    def result(self):
        try:
            status, payload, detail = self._conn.recv()
        except EOFError:
            status, payload, detail = "error", f"the model loader exited with code {self._process.exitcode}", ""
        finally:
            self._conn.close()
            self._process.join(timeout=10)
        if status != "ok":
            if detail:
                log.info("model loader traceback:\n%s", detail)
            raise JobError(payload)
        return payload


def featurize_udf(bc_model, batch_size: int, max_pixels: int):
    """predict_batch_udf: content bytes -> struct(features, error, width, height).

    `bc_model` is the broadcast `PortableModel`. Decoding happens per model batch inside the
    worker, so memory holds one batch of pixels at a time whatever the partition size. A failed
    decode gives an error string, not a crash.
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

    def make_predict_fn():
        import os
        import sys
        import time

        import numpy as np

        from fruits_spark.images import ImageRejected, decode_rgb
        from fruits_spark.inference import make_batch_predictor

        threads = int(os.environ.get("OMP_NUM_THREADS", "1"))  # Spark sets it to spark.task.cpus
        built = time.perf_counter()
        model = bc_model.value
        predictor = make_batch_predictor(model, threads)
        # Once per Python worker: predict_batch_udf caches this function for later tasks.
        print(f"featurize worker pid={os.getpid()}: built MobileNetV2 for {model.runtime} ({model.image_size}px, "
              f"{threads} thread(s)) in {time.perf_counter() - built:.1f}s; TensorFlow loaded: "
              f"{'yes' if 'tensorflow' in sys.modules else 'no'}", file=sys.stderr, flush=True)

        def predict(contents: np.ndarray) -> dict:
            n, size = len(contents), model.image_size
            pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
            decoded = np.zeros(n, dtype=bool)
            errors = np.empty(n, dtype=object)
            widths = np.zeros(n, dtype=np.int32)
            heights = np.zeros(n, dtype=np.int32)
            for i, data in enumerate(contents):
                try:
                    pixels[i], widths[i], heights[i] = decode_rgb(data, size, max_pixels)
                    decoded[i] = True
                except ImageRejected as exc:
                    errors[i] = str(exc)
            features = np.zeros((len(contents), FEATURE_DIM), dtype=np.float32)
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


@dataclass
class Inputs:
    """What the job reads: the image files, their DataFrame, and the rejects known without decoding."""

    files: int  # input files (image files to read + files rejected before reading)
    read_paths: set[str]  # the image files Spark's binaryFile source returned
    images: object  # DataFrame (path, length, content, ...) or None when nothing is readable
    rejects: list[tuple[str, str]]  # (uri, reason) of the files rejected before decoding


def check_runtime(runtime: str) -> None:
    """Fail before any Spark work when this driver cannot convert for `runtime` (workers check again)."""
    try:
        inference.require(runtime, converting=True)
    except inference.RuntimeUnavailable as exc:
        raise JobError(str(exc)) from None


def start(args: argparse.Namespace):
    """(session, model loader or None, warm-up thread): the model is built and converted in a
    child process while Spark starts and the Python workers import the runtime."""
    log.info("starting Spark; building MobileNetV2 (weights %r) for runtime %s in a child process meanwhile",
             args.weights, args.runtime)
    loader = ModelLoader(args.weights, args.image_size, args.seed, args.runtime) \
        if args.weights in ("imagenet", "none") else None
    spark = create_session("fruits-featurize", session_conf(args.batch_size))
    ship_package(spark)
    warm_up = warm_up_python_workers(spark, functools.partial(inference.prepare_worker, args.runtime,
                                                              args.image_size),
                                     hold=1.0, started=f"are importing runtime {args.runtime} while the driver "
                                                       "prepares the model")
    return spark, loader, warm_up


def plan(spark, args: argparse.Namespace) -> Inputs:
    """List the inputs, split them over the task slots, and find the files Spark will not return."""
    manifest = read_manifest(spark, args.manifest) if args.manifest else None  # fail fast when missing
    to_read, rejects, images = plan_inputs(spark, args, manifest)
    files = len(to_read) + len(rejects)
    log.info("%d input files: %d images to read, %d rejected before reading", files, len(to_read), len(rejects))
    set_partitioning(spark, len(to_read))
    read_paths = {r.path for r in images.select("path").collect()} if images is not None else set()
    for uri in sorted(set(to_read) - read_paths):
        rejects.append((uri, unread_reason(spark, uri)))
    return Inputs(files, read_paths, images, rejects)


def partition_count(images: int, slots: int) -> int:
    """A multiple of the task slots, with at most MAX_IMAGES_PER_PARTITION images per partition."""
    return slots * max(1, math.ceil(images / (slots * MAX_IMAGES_PER_PARTITION)))


def set_partitioning(spark, images: int) -> int:
    """Pack files by count, not by bytes: `partition_count` splits, about as many images in each."""
    partitions = partition_count(images, task_slots(spark))
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(1 << 40))
    spark.conf.set("spark.sql.files.minPartitionNum", str(partitions))
    return partitions


def featurize_and_write(spark, args: argparse.Namespace, inputs: Inputs, bc_model) -> list[tuple]:
    """Write the features parquet in one pass; return the reject rows of the images that failed to decode.

    The images that fail are gathered as a metric of the features write (a few short rows), so
    the features stream to parquet as the model produces them, with nothing cached and no image
    featurized twice.
    """
    if not inputs.read_paths:
        local_frame(spark, [], FEATURES_SCHEMA).write.mode("overwrite").parquet(args.output)
        return []
    slots = task_slots(spark)
    log.info("featurizing %d images in ~%d partitions (%d task slots of %s core(s)) on %s, batch %d, %dpx",
             len(inputs.read_paths), partition_count(len(inputs.read_paths), slots), slots,
             spark.conf.get("spark.task.cpus", "1"), args.runtime, args.batch_size, args.image_size)
    udf = featurize_udf(bc_model, args.batch_size, args.max_pixels)
    featurized = inputs.images.select(
        "path",
        F.element_at(F.split("path", "/"), -2).alias("label"),
        F.col("length").alias("size_bytes"),
        F.sha2("content", 256).alias("sha256"),
        udf("content").alias("out"),
    ).select("path", "label", "size_bytes", "sha256", "out.*")
    failed = Observation("featurize_rejects")
    reject = F.struct("path", "label", F.col("error").alias("reason"), "size_bytes")
    featurized.observe(failed, F.collect_list(F.when(F.col("error").isNotNull(), reject)).alias("rejects")) \
        .where(F.col("error").isNull()) \
        .select("path", "label", "features", "width", "height", "size_bytes", "sha256") \
        .write.mode("overwrite").parquet(args.output)
    log.info("features written")
    return [(r.path, r.label, r.reason, r.size_bytes) for r in failed.get["rejects"]]


def write_rejects(spark, args: argparse.Namespace, inputs: Inputs, undecodable: list[tuple]) -> None:
    """One small parquet file: the rejects found before reading, then those the model's batches gave."""
    rows = [(uri, paths.label_of(uri), reason, hadoop_fs.file_length(spark, uri)) for uri, reason in inputs.rejects]
    rows += undecodable
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
        raise JobError(f"accounting mismatch: {featured_rows} featurized + {rejected_rows} rejected "
                       f"!= {inputs.files} input files")
    print(f"{JOB}: " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    return summary


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    check_runtime(args.runtime)
    spark, loader, warm_up = start(args)
    inputs = plan(spark, args)
    if loader is None:  # a weights file: copy it from any storage, then load it beside Spark
        loader = ModelLoader(hadoop_fs.copy_to_local(spark, args.weights), args.image_size, args.seed, args.runtime,
                             name=args.weights)
    model = loader.result()  # a failed load or conversion ends the job here, before any image is featurized
    bc_model = spark.sparkContext.broadcast(model)
    warm_up.join(timeout=120)  # normally long finished
    undecodable = featurize_and_write(spark, args, inputs, bc_model)
    write_rejects(spark, args, inputs, undecodable)
    return account(spark, args, inputs, started)


def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
