"""Faster start-up of local `spark-submit`: a JVM class-data-sharing (AppCDS) archive, and
just-in-time compilation kept for the code that stays hot.

A local Spark job spends its first seconds loading and verifying some 15,000 JVM classes
(SparkContext, Catalyst, Parquet, Arrow) before reading a byte. Java 13+ can dump the classes a
run loaded into an archive (`-XX:ArchiveClassesAtExit`, JEP 350) that later JVMs map ready-made
(`-XX:SharedArchiveFile`): seconds sooner to a job's first scan.

HotSpot hands a method to its optimising compiler (C2) after about 15,000 calls or loop turns.
A short job crosses that for some 1,500 methods of Spark's own set-up and planning code, and C2
kept one of the two cores busy for most of pca.py's run. `-XX:CompileThresholdScaling=10` raises
the thresholds tenfold: a third of the compilation, while the loops that convert millions of
values still reach C2 within their first second. A flag already in SPARK_SUBMIT_OPTS wins.
The figures: docs/measurements.md.

    python -m fruits_dev.spark_cds build     # once per machine and Spark/Java version (make does it)
    python -m fruits_dev.spark_cds status

`with_startup_options(env)` adds both to SPARK_SUBMIT_OPTS (the driver JVM's options in client
and local mode), the archive only when it exists; FRUITS_SPARK_CDS=off adds neither.
`-Xshare:auto` makes the JVM ignore an archive that does not match its build or class path,
silently: a stale archive costs the speed-up, never a failed job. The archive is made by running
this file with spark-submit: one small workload that goes through the paths the pipeline's jobs
use (binaryFile, Arrow Python functions, Parquet, Spark ML save/load). Local mode only: on EMR
the driver is a long-lived YARN container and this is not used.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

# Not fruits.settings.PROJECT_ROOT: spark-submit runs this file as a script, without the package.
DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".cache" / "spark-cds"
BUILD_TIMEOUT_S = 600


def java_home() -> Path | None:
    """The Java that spark-class would run: $JAVA_HOME, else the first `java` on PATH."""
    if os.environ.get("JAVA_HOME"):
        return Path(os.environ["JAVA_HOME"])
    found = shutil.which("java")
    return Path(os.path.realpath(found)).parents[1] if found else None


def archive_path(directory: Path | None = None) -> Path | None:
    """Where the archive for this Spark and this Java lives (None without Java).

    The name changes with the pyspark version and the Java build, so an upgrade makes a new
    archive instead of silently running without one.
    """
    home = java_home()
    if home is None:
        return None
    release = home / "release"
    java_id = str(home.resolve()) + (release.read_text(errors="replace") if release.exists() else "")
    digest = hashlib.sha1(java_id.encode()).hexdigest()[:10]
    return (directory or DEFAULT_DIR) / f"spark-{metadata.version('pyspark')}-java-{digest}.jsa"


# See the module docstring: C2 for what stays hot, not for Spark's one-off set-up code.
JIT_OPTS = "-XX:CompileThresholdScaling=10"


def submit_opts(archive: Path | None, existing: str = "") -> str:
    """SPARK_SUBMIT_OPTS with the JIT thresholds (unless `existing` sets them) and `archive` if it
    exists, after the `existing` options."""
    opts = [existing] if existing else []
    if "CompileThresholdScaling" not in existing:
        opts.append(JIT_OPTS)
    if archive is not None and archive.is_file():
        opts.append(f"-XX:SharedArchiveFile={archive} -Xshare:auto")
    return " ".join(opts)


def with_startup_options(env: dict[str, str], directory: Path | None = None) -> dict[str, str]:
    """`env` with SPARK_SUBMIT_OPTS for a faster local start: JIT thresholds, this machine's archive.

    FRUITS_SPARK_CDS=off in `env` leaves it as it is (to measure or debug with the JVM's defaults).
    """
    if env.get("FRUITS_SPARK_CDS", "").strip().lower() in ("off", "0", "false", "no"):
        return env
    return {**env, "SPARK_SUBMIT_OPTS": submit_opts(archive_path(directory), env.get("SPARK_SUBMIT_OPTS", ""))}


def build(spark_submit: str, *, directory: Path | None = None, force: bool = False) -> Path | None:
    """Make the archive by running the workload below once; return its path (None if it failed).

    Written under a temporary name and renamed, so a concurrent job never maps half a file.
    """
    target = archive_path(directory)
    if target is None:
        print("spark_cds: no Java found: nothing to build", file=sys.stderr)
        return None
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    env = dict(os.environ)  # the caller's SPARK_SUBMIT_OPTS are replaced: the dump starts clean
    env["SPARK_SUBMIT_OPTS"] = f"-XX:ArchiveClassesAtExit={partial} -Xlog:cds=off -Xlog:cds+dynamic=off"
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fruits-cds-") as work:
        command = [
            spark_submit,
            "--master",
            "local[2]",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.log.level=ERROR",
            __file__,
            "--workload",
            work,
        ]
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            failure = None if proc.returncode == 0 else f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure = str(exc)
    if failure or not partial.is_file():
        partial.unlink(missing_ok=True)
        print(
            f"spark_cds: could not build the archive ({failure or 'no archive written'}); Spark jobs start without it.",
            file=sys.stderr,
        )
        return None
    os.replace(partial, target)
    print(
        f"spark_cds: built {target} ({target.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return target


def workload(work: str) -> None:
    """Runs inside spark-submit: touch the JVM code paths the pipeline's jobs load."""
    import pyarrow as pa
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.functions import array_to_vector, predict_batch_udf, vector_to_array
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    root = Path(work)
    for i, label in enumerate(["Apple Red 1", "Banana", "Kiwi"]):
        folder = root / "images" / label
        folder.mkdir(parents=True)
        (folder / f"r_{i}_100.jpg").write_bytes(bytes(range(i + 1, i + 40)))

    spark = SparkSession.builder.appName("fruits-spark-cds").getOrCreate()
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(root / "images"))

    def features(batches):  # an Arrow Python function, as pca.py's scans
        for batch in batches:
            lengths = batch.column("length").to_pylist()
            values = [[float(n + j) for j in range(4)] for n in lengths]
            yield pa.RecordBatch.from_arrays(
                [batch.column("path"), pa.array(values, pa.list_(pa.float32()))], names=["path", "features"]
            )

    def make_predict():  # predict_batch_udf with a struct result, as featurize.py's model call
        import numpy as np

        def predict(contents):
            sizes = np.array([len(c) for c in contents], dtype=np.float32)
            return {"features": np.repeat(sizes[:, None], 4, axis=1), "error": np.full(len(sizes), None)}

        return predict

    result = StructType([StructField("features", ArrayType(FloatType())), StructField("error", StringType())])
    predict = predict_batch_udf(make_predict, return_type=result, batch_size=2)
    files.select("path", predict("content").alias("result")).select("path", "result.*").write.mode("overwrite").parquet(
        str(root / "predicted")
    )
    files.select("path", "length").mapInArrow(features, "path string, features array<float>").withColumn(
        "label", F.element_at(F.split("path", "/"), -2)
    ).write.mode("overwrite").parquet(str(root / "features"))

    frame = spark.read.parquet(str(root / "features"))
    vectors = frame.select(array_to_vector("features").alias("vector"))
    model = Pipeline(
        stages=[
            StandardScaler(withMean=True, withStd=False, inputCol="vector", outputCol="centred"),
            PCA(k=2, inputCol="centred", outputCol="pca"),
        ]
    ).fit(vectors)
    model.write().overwrite().save(str(root / "model"))
    PipelineModel.load(str(root / "model")).transform(vectors).select(
        vector_to_array("pca").alias("pca_features")
    ).write.mode("overwrite").parquet(str(root / "pca"))
    spark.read.parquet(str(root / "pca")).sample(fraction=1.0, seed=1).collect()
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fruits_dev.spark_cds", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["build", "status"], default="status")
    parser.add_argument("--dir", type=Path, help=f"archive folder (default {DEFAULT_DIR})")
    parser.add_argument("--force", action="store_true", help="rebuild even if the archive exists")
    parser.add_argument("--spark-submit", default=str(Path(sys.executable).parent / "spark-submit"))
    parser.add_argument("--workload", help=argparse.SUPPRESS)  # set by `build`, inside spark-submit
    args = parser.parse_args(argv)
    if args.workload:
        workload(args.workload)
        return 0
    if args.command == "build":
        built = build(args.spark_submit, directory=args.dir, force=args.force)
        print(built or "no archive: Spark jobs start without one")
        return 0  # an optimisation: its absence must not fail a build
    path = archive_path(args.dir)
    print(f"{path} ({'present' if path and path.is_file() else 'missing: python -m fruits_dev.spark_cds build'})")
    if path and path.is_file():
        print(f'SPARK_SUBMIT_OPTS="{submit_opts(path)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
