"""What every job entry point needs: a session, logs users can follow, one-line errors."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("fruits")


class JobError(Exception):
    """A problem with the job's input or arguments, reported as one readable line."""


def setup_logging(job: str) -> logging.Logger:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {job} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)  # not one line per closed gateway connection
    return logging.getLogger(job)


@contextmanager
def exit_on_job_error(job: str):
    """Turn a JobError into `<job>: error: <message>` on stderr and exit status 2."""
    try:
        yield
    except JobError as exc:
        print(f"{job}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def _import_quietly(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - only a head start: the real import reports any error
        pass


def create_session(app_name: str, conf: dict[str, str] | None = None):
    """A SparkSession (reusing spark-submit's settings); local runs use this interpreter."""
    from pyspark.sql import SparkSession

    # PySpark 4's session set-up imports pandas (to check its version, through pyspark.testing).
    # Started now, that import overlaps the JVM's SparkContext start-up.
    threading.Thread(target=_import_quietly, args=("pandas",), daemon=True).start()
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_PYTHON" not in os.environ:
        # Otherwise local-mode workers start whatever `python3` is first on PATH.
        builder = builder.config("spark.pyspark.python", sys.executable)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("FRUITS_SPARK_LOG_LEVEL", "WARN"))
    return spark


def submitted_conf():
    """The SparkConf spark-submit (and spark-defaults.conf) gave, before any session exists."""
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # under spark-submit: attach to its JVM, to read its settings
    return SparkConf()


def executor_cores(conf) -> int | None:
    """Cores of one executor as far as the submitted configuration tells (None: unknown)."""
    master = conf.get("spark.master", "local[*]")
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if local:
        count = local.group(1)
        if count is None:
            return 1
        return (
            (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
            if count == "*"
            else int(count)
        )
    if master.startswith("local-cluster"):
        return None
    cores = conf.get("spark.executor.cores", None)
    return int(cores) if cores and cores.isdigit() else None


def unless_submitted(conf: dict[str, str]) -> dict[str, str]:
    """The job's defaults in `conf` minus the settings spark-submit already gave."""
    submitted = submitted_conf()
    return {key: value for key, value in conf.items() if not submitted.contains(key)}


def ship_package(spark) -> None:
    """Make `fruits_spark` importable on executors.

    With `--py-files fruits_spark.zip` (how the DAG submits on EMR) there is nothing to do;
    when the job is run from a checkout, zip the package beside the script and add it.
    """
    import fruits_spark

    package_dir = Path(fruits_spark.__file__).parent
    if not package_dir.is_dir():  # imported from a zip already shipped with --py-files
        return
    folder = tempfile.mkdtemp(prefix="fruits-pyfiles-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # served to executors until the job ends
    archive = Path(folder) / "fruits_spark.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for source in sorted(package_dir.glob("*.py")):
            zf.write(source, f"fruits_spark/{source.name}")
    spark.sparkContext.addPyFile(str(archive))


def local_frame(spark, rows: list[tuple], schema: list[tuple[str, str]]):
    """A small DataFrame of driver-side rows, built without Python workers.

    `createDataFrame(list)` would go through a Python RDD: one more pool of Python workers,
    started only to hand back a few rows (a job's rejects, say). Rows go to the JVM as Arrow
    instead (with spark.sql.execution.arrow.pyspark.enabled), and no rows is an empty range.
    """
    from pyspark.sql import functions as F

    if not rows:
        return spark.range(0).select(*[F.lit(None).cast(kind).alias(name) for name, kind in schema])
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=[name for name, _ in schema])
    return spark.createDataFrame(frame, ", ".join(f"`{name}` {kind}" for name, kind in schema))


def task_slots(spark) -> int:
    """How many tasks run at once: default parallelism / spark.task.cpus (at least 1)."""
    return max(1, spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus", "1")))


def warm_up_python_workers(spark, prepare, *, hold: float, started: str) -> threading.Thread:
    """Start Spark's Python workers now, in the background, while the driver plans the job.

    A worker takes seconds to start and import its libraries; Spark reuses idle workers
    (spark.python.worker.reuse), so a tiny job with one task per slot, run while the driver
    lists its inputs, hands the first real tasks workers that are ready. Each task runs
    `prepare()` (a picklable function of no arguments, e.g. one that starts building a model in
    a background thread of the worker), then stays busy `hold` seconds so that the other tasks
    get other workers. `started` is logged with the workers' pids once the job is done. Only a
    head start: a failure is logged, and the real job starts its own workers. (pca.py has none:
    there the job only competed with the first scan for the slots.)
    """
    slots = task_slots(spark)
    hold = hold if slots > 1 else 0.0

    def touch(batches):
        import os
        import time

        import pyarrow as pa

        prepare()
        time.sleep(hold)
        for batch in batches:
            yield pa.RecordBatch.from_arrays([pa.array([os.getpid()] * batch.num_rows, pa.int64())], ["pid"])

    def run() -> None:
        try:
            rows = spark.range(0, slots, 1, numPartitions=slots).mapInArrow(touch, "pid long").collect()
            log.info("Python worker(s) %s %s", ", ".join(map(str, sorted({r.pid for r in rows}))), started)
        except Exception as exc:  # noqa: BLE001 - only a head start
            log.warning("Python worker warm-up failed (%s): the job starts them itself", exc)

    thread = threading.Thread(target=run, name="fruits-python-warm-up", daemon=True)
    thread.start()
    return thread
