"""What every job entry point needs: a session, logs users can follow, one-line errors."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
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
    return logging.getLogger(job)


@contextmanager
def exit_on_job_error(job: str):
    """Turn a JobError into `<job>: error: <message>` on stderr and exit status 2."""
    try:
        yield
    except JobError as exc:
        print(f"{job}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def create_session(app_name: str, conf: dict[str, str] | None = None):
    """A SparkSession (reusing spark-submit's settings); local runs use this interpreter."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_PYTHON" not in os.environ:
        # Otherwise local-mode workers start whatever `python3` is first on PATH.
        builder = builder.config("spark.pyspark.python", sys.executable)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("FRUITS_SPARK_LOG_LEVEL", "WARN"))
    return spark


def ship_package(spark) -> None:
    """Make `fruits_spark` importable on executors.

    With `--py-files fruits_spark.zip` (how the DAG submits on EMR) there is nothing to do;
    when the job is run from a checkout, zip the package beside the script and add it.
    """
    import fruits_spark

    package_dir = Path(fruits_spark.__file__).parent
    if not package_dir.is_dir():  # imported from a zip already shipped with --py-files
        return
    archive = Path(tempfile.mkdtemp(prefix="fruits-pyfiles-")) / "fruits_spark.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for source in sorted(package_dir.glob("*.py")):
            zf.write(source, f"fruits_spark/{source.name}")
    spark.sparkContext.addPyFile(str(archive))
