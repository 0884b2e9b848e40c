"""Shared test helpers: running the Spark jobs the way users do.

The suite has three tiers (README, "Tests"): tests/unit (no scheduler, no Spark), tests/dags
(DAG parsing and structure) and tests/integration (real spark-submit, DAG runs on moto).
The project is installed in the venv (`make venv`), so nothing here edits sys.path; test
modules import these helpers as `conftest` (this is the suite's only conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPARK_JOBS = ROOT / "spark_jobs"
DAGS = ROOT / "dags"

from fruits.settings import DEFAULT_REGION  # noqa: E402
from fruits.storage import Bucket  # noqa: E402
from fruits_dev import spark_cds  # noqa: E402

SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
TEST_IMAGE_SIZE = 32  # MobileNetV2's smallest input: still 1280 features, much faster


def load_job(script: str):
    """A job script (spark_jobs/<script>.py) as a module, to call its argument parser: the jobs are
    scripts for spark-submit, not an importable package."""
    name = f"fruits_job_{script}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SPARK_JOBS / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return spark_cds.with_startup_options(env)  # faster JVM start-up (JIT thresholds, `make spark-cds` archive)


def spark_submit(script: str, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `spark-submit spark_jobs/<script> args...` in local mode; return the finished process."""
    command = [
        str(SPARK_SUBMIT), "--master", "local[2]", "--driver-memory", "2g",
        "--conf", "spark.log.level=WARN", "--conf", "spark.ui.enabled=false",
        str(SPARK_JOBS / script), *args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=job_env(), timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def summary_of(proc: subprocess.CompletedProcess, job: str) -> dict[str, str]:
    """Parse the `<job>: key=value ...` summary line a job prints at the end."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{job}: ")]
    assert lines, f"no summary line from {job}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return dict(item.split("=", 1) for item in lines[-1][len(job) + 2:].split())


@pytest.fixture(scope="session")
def spark_submit_cmd():
    if not SPARK_SUBMIT.exists():
        pytest.fail(f"spark-submit not found next to {sys.executable}: run `make test`")
    return spark_submit


@pytest.fixture
def local_spark(monkeypatch):
    """An in-process SparkSession (local[2]) whose Python workers run this interpreter and can
    import fruits_spark; stopped after the test."""
    from pyspark.sql import SparkSession

    from fruits_spark.runtime import ship_package

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[2]").appName("fruits-tests")
             .config("spark.ui.enabled", "false").getOrCreate())
    ship_package(spark)
    yield spark
    spark.stop()


@pytest.fixture
def aws_credentials(monkeypatch):
    """Fake credentials for moto; nothing from the machine's AWS set-up leaks in."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": DEFAULT_REGION}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket(aws_credentials) -> Bucket:
    """An empty bucket on moto's in-process mock, behind a real S3Hook (no Airflow connection:
    boto3's default credentials), as the DAG's tasks reach S3."""
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name=DEFAULT_REGION).create_bucket(
            Bucket="fruits-unit", CreateBucketConfiguration={"LocationConstraint": DEFAULT_REGION})
        yield Bucket.connect(None, "fruits-unit")
