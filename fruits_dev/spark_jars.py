"""Install the S3A jars of a pyspark: resolved once by Spark's own Ivy, then only read from disk.

    python -m fruits_dev.spark_jars install [--spark-home DIR]     # make venv / make emr-stack

Resolution runs that pyspark's `spark-submit --packages <pins>` with Ivy's cache in
fruits.spark_s3a.cache_dir() (outside the checkout: a clean clone on the same machine downloads
nothing), on a two-line script that prints the jars Spark put on its classpath; their paths are
recorded next to the cache. Every later run passes those paths as `spark.jars`: no Ivy, no network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fruits import spark_s3a

_PRINT_JARS = """\
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("FRUITS_JARS " + spark.sparkContext.getConf().get("spark.jars", ""), flush=True)
spark.stop()
"""


def pyspark_home(python: str) -> Path:
    """SPARK_HOME of the pyspark installed for `python` (a pip-installed pyspark is its own home)."""
    out = subprocess.run(
        [python, "-c", "import pyspark, os; print(os.path.dirname(pyspark.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def spark_version_of(spark_home: Path) -> str:
    """The Spark version of a pip-installed pyspark (pyspark/version.py), without importing it."""
    namespace: dict = {}
    exec((spark_home / "version.py").read_text(encoding="utf-8"), namespace)  # noqa: S102 - a constant
    return namespace["__version__"]


def shipped_hadoop(spark_home: Path) -> str | None:
    """The Hadoop version whose client jars this Spark ships (hadoop-client-api-<version>.jar)."""
    for jar in (spark_home / "jars").glob("hadoop-client-api-*.jar"):
        return jar.name[len("hadoop-client-api-") : -len(".jar")]
    return None


def install(python: str) -> list[str]:
    """Resolve (or find already resolved) the S3A jars for the pyspark of `python`."""
    home = pyspark_home(python)
    version = spark_version_of(home)
    shipped, pinned = shipped_hadoop(home), spark_s3a.hadoop_version(version)
    if shipped != pinned:
        raise SystemExit(
            f"pyspark {version} ships Hadoop {shipped}, but fruits/spark_s3a.py pins hadoop-aws "
            f"{pinned} for Spark {spark_s3a.spark_minor(version)}: align the pin"
        )
    try:
        jars = spark_s3a.resolved_jars(version)
        print(f"S3A jars of Spark {version} already installed ({len(jars)} in {spark_s3a.cache_dir()})")
        return jars
    except spark_s3a.S3AJarsMissing:
        pass
    print(
        f"resolving {', '.join(spark_s3a.packages(version))} for Spark {version} into {spark_s3a.cache_dir()}",
        flush=True,
    )
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "print_jars.py"
        script.write_text(_PRINT_JARS, encoding="utf-8")
        proc = subprocess.run(
            [
                str(home / "bin" / "spark-submit"),
                "--master",
                "local[1]",
                "--conf",
                f"spark.jars.ivy={spark_s3a.cache_dir()}",
                "--conf",
                "spark.ui.enabled=false",
                "--packages",
                ",".join(spark_s3a.packages(version)),
                str(script),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("FRUITS_JARS ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"resolving the S3A jars failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    jars = [uri.removeprefix("file://") for uri in lines[-1].split(" ", 1)[1].split(",") if uri]
    missing = [jar for jar in jars if not Path(jar).is_file()]
    if not jars or missing:
        raise SystemExit(f"Spark reported S3A jars that are not on disk: {missing or 'none at all'}")
    listing = spark_s3a.write_jars_list(version, jars)
    print(f"S3A jars of Spark {version}: {len(jars)} recorded in {listing}")
    return jars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("install", help="resolve the S3A jars of a pyspark into the cache")
    cmd.add_argument("--python", default=sys.executable, help="interpreter whose pyspark to serve (default: this one)")
    args = parser.parse_args(argv)
    install(args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
