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

With `--model-cache FOLDER` (the DAG passes `<work_dir>/model-cache` locally and
`s3://<bucket>/models/converted/` on EMR) a converted model is kept between jobs under a key of
everything that shapes it (`fruits_spark.model_cache`): only the first job of a deployment, or of
new weights, size, runtime or library versions, pays for TensorFlow and the conversion.

Start-up work runs side by side: the driver builds and converts the model in a child process
(TensorFlow never enters the driver itself) while Spark lists the inputs and the Python workers
import the runtime (`inference.prepare_worker`). A model that cannot be loaded or converted (a
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
import bisect
import functools
import json
import math
import multiprocessing
import os
import re
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd

from pyspark.sql import Observation
from pyspark.sql import functions as F

from fruits_spark import hadoop_fs, inference, manifest, model_cache, paths
from fruits_spark.images import DEFAULT_MAX_PIXELS
from fruits_spark.interface import FEATURE_DIM
from fruits_spark.manifest import Entry
from fruits_spark.model import MIN_IMAGE_SIZE
from fruits_spark.runtime import (JobError, create_session, exit_on_job_error, setup_logging, ship_package,
                                  submitted_conf, task_slots, warm_up_python_workers)

JOB = "featurize"
# One partition holds at most this many images, so that a lost task is cheap to redo.
MAX_IMAGES_PER_PARTITION = 2000
# Cores (= TensorFlow threads) per featurize task when spark.task.cpus is not set.
DEFAULT_TASK_CPUS = 2
# Folders listed, or hidden-named files copied, at the same time by the driver.
LISTING_THREADS = 8
FEATURES_SCHEMA = [("path", "string"), ("label", "string"), ("features", "array<float>"), ("width", "int"),
                   ("height", "int"), ("size_bytes", "bigint"), ("sha256", "string")]
REJECTS_SCHEMA = [("path", "string"), ("label", "string"), ("reason", "string"), ("size_bytes", "bigint")]

log = setup_logging(JOB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="featurize.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder or prefix, read recursively")
    source.add_argument("--manifest", help="*.jsonl: one {source, read, label} object per line; "
                                              "any other name: one image URI per line")
    parser.add_argument("--output", required=True, help="features parquet URI")
    parser.add_argument("--rejects", required=True, help="rejects parquet URI")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none | URI of a Keras weights file")
    parser.add_argument("--image-size", type=int, default=224, help="model input size in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images above this many pixels (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--seed", type=int, default=42, help="seed of --weights none (default 42)")
    parser.add_argument("--model-cache", default=None,
                        help="folder (local, file:// or s3://) keeping converted models between jobs: "
                             "only a job whose weights, size, runtime or library versions are new converts")
    parser.add_argument("--runtime", choices=list(inference.RUNTIMES), default=inference.DEFAULT_RUNTIME,
                        help=f"inference runtime of the executors (default {inference.DEFAULT_RUNTIME}; "
                             "all compute in float32 and give the Keras model's features)")
    args = parser.parse_args(argv)
    if args.image_size < MIN_IMAGE_SIZE:
        parser.error(f"--image-size must be at least {MIN_IMAGE_SIZE} (MobileNetV2's smallest input)")
    if args.batch_size < 1:
        parser.error("--batch-size must be positive")
    return args


def read_manifest(spark, uri: str) -> list[Entry]:
    """The distinct entries of a manifest (JSON Lines when its name ends in .jsonl, else text)."""
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"manifest not found: {uri}")
    try:
        text = hadoop_fs.read_text(spark, uri)
    except UnicodeDecodeError as exc:
        raise JobError(f"manifest {uri} is not UTF-8 text (byte {exc.start})") from None
    try:
        return manifest.parse(text, uri)
    except manifest.ManifestError as exc:
        raise JobError(f"malformed manifest {uri}: {exc}") from None


def list_images(spark, uri: str) -> tuple[list[Entry], dict[str, int]]:
    """--images: the files with an image extension under `uri` (every file name, as the manifest
    modes read them) and the bytes of each; the label is the parent folder name."""
    found = hadoop_fs.list_tree(spark, uri, threads=LISTING_THREADS)
    if found is None:
        raise JobError(f"no such folder or file: {uri}")
    lengths = {paths.canonical_uri(f): size for f, size in found.items()}
    entries = [Entry(f, f, paths.label_of(f)) for f in sorted(lengths) if paths.is_image_path(f)]
    return entries, lengths


def read_lengths(spark, entries: list[Entry]) -> dict[str, int]:
    """Bytes of every existing read location: one listing per folder, a few folders at a time.

    A Hadoop listing, not Spark's: Spark's would hide names starting with `_` or `.`.
    """
    parents = sorted({paths.parent_of(entry.read) for entry in entries})
    if not parents:
        return {}
    with ThreadPoolExecutor(max_workers=min(LISTING_THREADS, len(parents))) as pool:
        listings = list(pool.map(functools.partial(hadoop_fs.list_folder, spark), parents))
    return {paths.canonical_uri(f): size for listing in listings for f, size in listing.items()}


def triage(entries: list[Entry], lengths: dict[str, int]) -> tuple[list[Entry], list[tuple]]:
    """(entries to read, reject rows known before reading): missing, not an image type, empty."""
    to_read, rejects = [], []
    for entry in entries:
        size = lengths.get(entry.read)
        if size is None:
            rejects.append((entry.source, entry.label, "file not found", None))
        elif not paths.is_image_path(entry.source):
            rejects.append((entry.source, entry.label, paths.unsupported_type_reason(), size))
        elif size == 0:
            rejects.append((entry.source, entry.label, "empty file (0 bytes)", 0))
        else:
            to_read.append(entry)
    return to_read, rejects


def stage_hidden(spark, reads: list[str]) -> tuple[dict[str, str], str | None]:
    """(read location -> the path Spark loads, scratch folder or None).

    Spark's file sources skip names starting with `_` or `.` even when named explicitly, so
    those files (camera names such as `_DSC0001.JPG`) are read from a copy under a plain name
    in a scratch folder every executor can read; the caller removes it after the job.
    """
    hidden = [uri for uri in reads if paths.hidden_from_spark(uri)]
    load_path = {uri: uri for uri in reads if not paths.hidden_from_spark(uri)}
    if not hidden:
        return load_path, None
    scratch = hadoop_fs.scratch_folder(spark)
    copies = {uri: f"{scratch}/{index:06d}{os.path.splitext(paths.file_name(uri))[1].lower()}"
              for index, uri in enumerate(hidden)}
    log.info("copying %d file(s) whose names Spark hides (leading _ or .) to %s", len(hidden), scratch)

    def copy(item: tuple[str, str]) -> tuple[str, str] | None:
        try:
            hadoop_fs.copy(spark, *item)
            return item
        except Exception as exc:  # noqa: BLE001 - gone since the listing: an unread file, reported later
            log.warning("cannot copy %s: %s", item[0], str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None

    with ThreadPoolExecutor(max_workers=min(LISTING_THREADS, len(hidden))) as pool:
        copied = [item for item in pool.map(copy, copies.items()) if item]
    load_path.update({uri: paths.canonical_uri(target) for uri, target in copied})
    return load_path, scratch


def folders_to_load(wanted: list[str], listed: dict[str, int]) -> tuple[list[str], list[str]]:
    """(folders to load whole, files to load one by one) covering exactly `wanted`.

    Spark lists a folder on the JVM in one pass, while every file named explicitly costs it a
    file-status check (~3-5 ms of a core each: 1,200 files took 4-7 s here). A folder is loaded
    whole when Spark's recursive listing of it returns exactly the wanted files under it: every
    non-empty file under it is wanted or hidden from Spark (a name starting with `_` or `.`
    anywhere below the folder; Spark's scans skip empty files too), and no wanted file sits below
    a hidden folder. Everything else is named. Lookups go through the sorted listing, so the
    cost grows with the files, not with files x folders.
    """
    wanted_set = set(wanted)
    ordered = sorted(listed)

    def files_under(folder: str) -> list[str]:
        # "0" sorts right after "/": the range is every path starting with folder + "/"
        return ordered[bisect.bisect_left(ordered, folder + "/"):bisect.bisect_left(ordered, folder + "0")]

    def hidden_below(folder: str, path: str) -> bool:
        return any(part.startswith(("_", ".")) for part in path[len(folder) + 1:].split("/"))

    def ancestors(path: str):
        while "/" in path:
            path = paths.parent_of(path)
            yield path

    chosen: set[str] = set()
    for folder in sorted({paths.parent_of(f) for f in wanted}, key=lambda f: (len(f), f)):
        if any(parent in chosen for parent in ancestors(folder)) or paths.hidden_from_spark(folder):
            continue
        under = [f for f in files_under(folder) if listed[f] > 0 or f in wanted_set]
        if all(f in wanted_set or hidden_below(folder, f) for f in under) and \
                not any(hidden_below(folder, f) for f in under if f in wanted_set):
            chosen.add(folder)
    files = [f for f in wanted if not any(parent in chosen for parent in ancestors(f))]
    return sorted(chosen), files


def load_binary(spark, wanted: list[str], listed: dict[str, int]):
    """binaryFile over exactly the `wanted` files: whole folders where that is exact, else by name."""
    folders, files = folders_to_load(wanted, listed)
    reader = spark.read.format("binaryFile")
    parts = []
    if folders:
        parts.append(reader.option("recursiveFileLookup", "true").load([paths.escape_glob(f) for f in folders]))
    if files:
        parts.append(spark.read.format("binaryFile").load([paths.escape_glob(f) for f in files]))
    log.info("reading %d image file(s): %d folder(s) listed whole, %d file(s) by name", len(wanted), len(folders),
             len(files))
    return parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])


def read_images(spark, expected: list[Entry], load_path: dict[str, str], listed: dict[str, int]):
    """binaryFile DataFrame of the `expected` entries' bytes (each has a `load_path`) joined to
    their source and label, or None when there are none.

    One row per entry, also when two entries share a read location. Whether Spark returned a
    row for every entry is checked once the features are written (`missing_entries`), not by a
    pass over the files beforehand: nearly always it did.
    """
    if not expected:
        return None
    found = [(load_path[e.read], e.source, e.label) for e in expected]
    loaded = load_binary(spark, sorted({read for read, _, _ in found}), listed)
    frame = local_frame(spark, found, [("read_path", "string"), ("source", "string"), ("label", "string")])
    return loaded.join(F.broadcast(frame), loaded["path"] == frame["read_path"])


def missing_entries(expected: list[Entry], returned: Counter) -> list[Entry]:
    """The entries of `expected` without a row among `returned` (source path -> rows: featurized
    or failed to decode), as many times as they are short."""
    left = Counter(returned)
    missing = []
    for entry in expected:
        if left[entry.source] > 0:
            left[entry.source] -= 1
        else:
            missing.append(entry)
    return missing


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
        # A file deleted between the listing and its read gives no row, and a reject with the
        # reason (`missing_entries`), instead of failing the job.
        "spark.sql.files.ignoreMissingFiles": "true",
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

    def stop(self) -> None:
        """Not needed any more (the model came from the cache): stop converting."""
        self._process.terminate()
        self._process.join(timeout=10)
        self._conn.close()

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


@dataclass
class CachedModel:
    """A converted model found in `--model-cache` (same interface as ModelLoader)."""

    model: object

    def result(self):
        return self.model

    def stop(self) -> None:
        pass


def _cache_read(spark, folder: str, name: str) -> bytes | None:
    if model_cache.is_local(folder):
        return model_cache.read_local(folder, name)
    uri = model_cache.join(folder, name)
    return hadoop_fs.read_bytes(spark, uri) if hadoop_fs.exists(spark, uri) else None


def cached_model(spark, args: argparse.Namespace, name: str | None):
    """The converted model from `--model-cache`, or None (no cache, a miss, or an unusable entry)."""
    if not args.model_cache or name is None:
        return None
    model = model_cache.loads(data, args.runtime, args.image_size) \
        if (data := _cache_read(spark, args.model_cache, name)) else None
    log.info("model cache %s: %s", "hit" if model else "miss", model_cache.join(args.model_cache, name))
    return CachedModel(model) if model else None


def store_model(spark, args: argparse.Namespace, name: str | None, model) -> None:
    """Keep a freshly converted model for the next jobs; a cache that cannot be written only costs
    the next job a conversion, so it is a warning, not a failure."""
    if not args.model_cache or name is None:
        return
    data = model_cache.dumps(model)
    try:
        if model_cache.is_local(args.model_cache):
            model_cache.write_local(args.model_cache, name, data)
        else:
            hadoop_fs.write_bytes(spark, model_cache.join(args.model_cache, name), data)
        log.info("model cache: stored %s (%s)", model_cache.join(args.model_cache, name), model_cache.describe(model))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("model cache: could not store %s: %s", name, exc)


def cache_name(args: argparse.Namespace, weights_file: str | None = None) -> str | None:
    if not args.model_cache:
        return None
    identity = model_cache.weights_identity(args.weights, args.seed, weights_file)
    return model_cache.key(weights_identity=identity, image_size=args.image_size, runtime=args.runtime)


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
    """What the job reads: the entries, the images DataFrame, and the rejects known without decoding."""

    files: int  # entries (image files to read + entries rejected before reading)
    expected: list[Entry]  # the entries `images` should give a row for
    images: object  # DataFrame (path, length, content, ..., source, label) or None when nothing is readable
    rejects: list[tuple]  # (path, label, reason, size_bytes) of the entries rejected before decoding
    scratch: str | None  # folder of the copies of hidden-named files, removed after the job
    lengths: dict[str, int]  # bytes of every listed read location

    @property
    def readable(self) -> int:
        return len(self.expected)


def check_runtime(runtime: str) -> None:
    """Fail before any Spark work when this driver cannot convert for `runtime` (workers check again)."""
    try:
        inference.require(runtime, converting=True)
    except inference.RuntimeUnavailable as exc:
        raise JobError(str(exc)) from None


def start(args: argparse.Namespace):
    """(session, model loader or None, warm-up thread): the model is built and converted in a
    child process while Spark starts and the Python workers import the runtime."""
    named_weights = args.weights in ("imagenet", "none")
    name = cache_name(args) if named_weights else None
    loader = cached_model(None, args, name) if name and model_cache.is_local(args.model_cache) else None
    if loader is None and named_weights:
        log.info("starting Spark; building MobileNetV2 (weights %r) for runtime %s in a child process meanwhile",
                 args.weights, args.runtime)
        loader = ModelLoader(args.weights, args.image_size, args.seed, args.runtime)
    spark = create_session("fruits-featurize", session_conf(args.batch_size))
    ship_package(spark)
    if isinstance(loader, ModelLoader) and name and not model_cache.is_local(args.model_cache):
        hit = cached_model(spark, args, name)  # a remote cache is read through Spark's file systems
        if hit:
            loader.stop()
            loader = hit
    warm_up = warm_up_python_workers(spark, functools.partial(inference.prepare_worker, args.runtime,
                                                              args.image_size),
                                     hold=1.0, started=f"are importing runtime {args.runtime} while the driver "
                                                       "prepares the model")
    return spark, loader, warm_up


def plan(spark, args: argparse.Namespace) -> Inputs:
    """Read the manifest or list the folder, split the images over the task slots, and find the
    entries that end as rejects before any decoding (missing, not an image type, empty, unread)."""
    if args.manifest:
        entries = read_manifest(spark, args.manifest)  # fail fast when missing or malformed
        lengths = read_lengths(spark, entries)
    else:
        entries, lengths = list_images(spark, args.images)
    to_read, rejects = triage(entries, lengths)
    log.info("%d input files: %d images to read, %d rejected before reading", len(entries), len(to_read),
             len(rejects))
    set_partitioning(spark, len(to_read))
    load_path, scratch = stage_hidden(spark, sorted({entry.read for entry in to_read}))
    expected = [entry for entry in to_read if entry.read in load_path]
    unstaged = [entry for entry in to_read if entry.read not in load_path]  # their hidden-name copy failed
    rejects.extend(unread_rejects(spark, unstaged, lengths))
    images = read_images(spark, expected, load_path, lengths)
    return Inputs(len(entries), expected, images, rejects, scratch, lengths)


def unread_rejects(spark, entries: list[Entry], lengths: dict[str, int]) -> list[tuple]:
    """Reject rows for listed entries that gave Spark nothing to read, each with its reason."""
    return [(entry.source, entry.label, unread_reason(spark, entry.read), lengths.get(entry.read)) for entry in entries]


def partition_count(images: int, slots: int) -> int:
    """A multiple of the task slots, with at most MAX_IMAGES_PER_PARTITION images per partition."""
    return slots * max(1, math.ceil(images / (slots * MAX_IMAGES_PER_PARTITION)))


def set_partitioning(spark, images: int) -> int:
    """Pack files by count, not by bytes: `partition_count` splits, about as many images in each.

    Spark checks each of the files it is given in a listing job of one task per file by default
    (9 s for 2,000 local files on 2 cores); a few tasks per slot do it in a third of that.
    """
    slots = task_slots(spark)
    partitions = partition_count(images, slots)
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(1 << 40))
    spark.conf.set("spark.sql.files.minPartitionNum", str(partitions))
    spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(max(8, 4 * slots)))
    return partitions


def featurize_and_write(spark, args: argparse.Namespace, inputs: Inputs, bc_model) -> list[tuple]:
    """Write the features parquet in one pass; return the reject rows of the images that failed to
    decode, and of the entries Spark returned no row for (a file deleted since the listing).

    The images that fail, and the count of rows, are gathered as metrics of the features write
    (a few short rows), so the features stream to parquet as the model produces them, with
    nothing cached and no image featurized twice.
    """
    if not inputs.readable:
        local_frame(spark, [], FEATURES_SCHEMA).write.mode("overwrite").parquet(args.output)
        return []
    slots = task_slots(spark)
    log.info("featurizing %d images in ~%d partitions (%d task slots of %s core(s)) on %s, batch %d, %dpx",
             inputs.readable, partition_count(inputs.readable, slots), slots,
             spark.conf.get("spark.task.cpus", "1"), args.runtime, args.batch_size, args.image_size)
    udf = featurize_udf(bc_model, args.batch_size, args.max_pixels)
    featurized = inputs.images.select(
        F.col("source").alias("path"),
        "label",
        F.col("length").alias("size_bytes"),
        F.sha2("content", 256).alias("sha256"),
        udf("content").alias("out"),
    ).select("path", "label", "size_bytes", "sha256", "out.*")
    failed = Observation("featurize_rejects")
    reject = F.struct("path", "label", F.col("error").alias("reason"), "size_bytes")
    # The rejects travel as one JSON string: Spark 3.5's Observation hands nested values (a list of
    # structs) to Python as raw Java objects, Spark 4 as rows; a string is a string on both.
    featurized.observe(failed, F.count(F.lit(1)).alias("rows"),
                       F.to_json(F.collect_list(F.when(F.col("error").isNotNull(), reject))).alias("rejects")) \
        .where(F.col("error").isNull()) \
        .select("path", "label", "features", "width", "height", "size_bytes", "sha256") \
        .write.mode("overwrite").parquet(args.output)
    log.info("features written")
    metrics = failed.get
    undecodable = [(r["path"], r.get("label"), r["reason"], r.get("size_bytes")) for r in json.loads(metrics["rejects"])]
    if metrics["rows"] >= inputs.readable:  # more would be a bug: `account` stops the job on it
        return undecodable
    returned = Counter(r.path for r in spark.read.parquet(args.output).select("path").collect())
    returned.update(row[0] for row in undecodable)
    missing = missing_entries(inputs.expected, returned)
    log.warning("%d listed file(s) gave no row (deleted since the listing?): rejected", len(missing))
    return undecodable + unread_rejects(spark, missing, inputs.lengths)


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
        raise JobError(f"accounting mismatch: {featured_rows} featurized + {rejected_rows} rejected "
                       f"!= {inputs.files} input files")
    print(f"{JOB}: " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    return summary


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    check_runtime(args.runtime)
    spark, loader, _ = start(args)
    inputs = plan(spark, args)
    try:
        name = cache_name(args) if args.weights in ("imagenet", "none") else None
        if loader is None:  # a weights file: copy it from any storage, then load it beside Spark
            local_weights = hadoop_fs.copy_to_local(spark, args.weights)
            name = cache_name(args, local_weights)
            loader = cached_model(spark, args, name) or ModelLoader(local_weights, args.image_size, args.seed,
                                                                    args.runtime, name=args.weights)
        model = loader.result()  # a failed load or conversion ends the job here, before any image is featurized
        if isinstance(loader, ModelLoader):
            store_model(spark, args, name, model)
        bc_model = spark.sparkContext.broadcast(model)
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
