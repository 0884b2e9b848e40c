"""Shared test helpers: running the Spark jobs the way users do.

The suite has three tiers (docs/tests.md): tests/unit (no scheduler, no Spark), tests/dags
(DAG parsing and structure) and tests/integration (real spark-submit, DAG runs on moto).
The project is installed in the venv (`make venv`), so nothing here edits sys.path; test
modules import these helpers as `conftest` (this is the suite's only conftest.py)."""

from __future__ import annotations

import importlib.util
import json
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
        str(SPARK_SUBMIT),
        "--master",
        "local[2]",
        "--driver-memory",
        "2g",
        "--conf",
        "spark.log.level=WARN",
        "--conf",
        "spark.ui.enabled=false",
        str(SPARK_JOBS / script),
        *args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=job_env(), timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def summary_of(proc: subprocess.CompletedProcess, job: str) -> dict[str, str]:
    """Parse the `<job>: key=value ...` summary line a job prints at the end."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{job}: ")]
    assert lines, f"no summary line from {job}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return dict(item.split("=", 1) for item in lines[-1][len(job) + 2 :].split())


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
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("fruits-tests")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    ship_package(spark)
    yield spark
    spark.stop()


@pytest.fixture
def aws_credentials(monkeypatch):
    """Fake credentials for moto; nothing from the machine's AWS set-up leaks in."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": DEFAULT_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fruits_s3_connection(monkeypatch) -> str:
    """An Airflow AWS connection `fruits_s3` to an S3 endpoint on loopback, with its own
    credentials and region, as a deployment defines it (AIRFLOW_CONN_*); returns its id."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_FRUITS_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIDCONN",
                "password": "conn-secret",
                "extra": {"region_name": "eu-west-3", "endpoint_url": "http://127.0.0.1:9000"},
            }
        ),
    )
    return "fruits_s3"


@pytest.fixture
def bucket(aws_credentials) -> Bucket:
    """An empty bucket on moto's in-process mock, behind a real S3Hook (no Airflow connection:
    boto3's default credentials), as the DAG's tasks reach S3."""
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name=DEFAULT_REGION).create_bucket(
            Bucket="fruits-unit", CreateBucketConfiguration={"LocationConstraint": DEFAULT_REGION}
        )
        yield Bucket.connect(None, "fruits-unit")


def make_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any", payload: str = "") -> Path:
    """A tiny wheel pip can install (one module, METADATA, WHEEL, RECORD), byte-identical for the
    same arguments: EMR wheelhouse tests need real wheel files, not TensorFlow's."""
    import base64
    import hashlib
    import zipfile

    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}.py": f"VERSION = {version!r}\n{payload}",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: fruits-tests\n"
        f"Root-Is-Purelib: {'true' if tag.endswith('-any') else 'false'}\nTag: {tag}\n",
    }
    record = [
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(t.encode())}"
        for n, t in files.items()
    ]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return path


# One wheel every node installs, and one per architecture behind a platform_machine marker, as
# requirements-emr.txt pins tensorflow-cpu (x86_64) and tensorflow (aarch64).
SYNTHETIC_WHEELS = (
    ("fruit-common", None, "py3-none-any"),
    ("fruit-x86", "x86_64", "cp311-cp311-manylinux_2_17_x86_64"),
    ("fruit-arm", "aarch64", "cp311-cp311-manylinux_2_28_aarch64"),
)


def synthetic_requirements(index: Path) -> str:
    """Writes the SYNTHETIC_WHEELS into `index` (a --find-links folder) and returns a hash-pinned
    requirements file naming them, in requirements-emr.txt's format."""
    import hashlib

    lines = ["# synthetic requirements-emr.txt (tests)"]
    for name, machine, tag in SYNTHETIC_WHEELS:
        digest = hashlib.sha256(make_wheel(index, name, "1.0", tag).read_bytes()).hexdigest()
        marker = f" ; platform_machine == '{machine}'" if machine else ""
        lines.append(f"{name}==1.0{marker} \\\n    --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"


def synthetic_wheelhouse(tmp: Path) -> dict[str, Path]:
    """A copy of spark_jobs/ whose requirements-emr.txt pins the SYNTHETIC_WHEELS, and its wheelhouse
    for every node architecture, built by fruits_dev.wheelhouse from a local folder: what an EMR
    test uploads instead of the real ~1 GB of wheels. `spark_jobs` and `wheelhouse` are the
    FRUITS_SPARK_JOBS_DIR and FRUITS_EMR_WHEELHOUSE of a DAG run."""
    import shutil

    from fruits.backends.emr import code
    from fruits_dev import wheelhouse as builder

    jobs, index = tmp / "spark_jobs", tmp / "index"
    for name, path in code.source_files(SPARK_JOBS).items():
        (jobs / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, jobs / name)
    requirements = jobs / "emr" / "requirements-emr.txt"
    requirements.write_text(synthetic_requirements(index))
    folders = builder.build(requirements, tmp / "wheelhouse", pip_args=["--no-index", "--find-links", str(index)])
    return {
        "spark_jobs": jobs,
        "wheelhouse": tmp / "wheelhouse",
        "requirements": requirements,
        "index": index,
        **{f"folder_{arch}": folder for arch, folder in folders.items()},
    }
