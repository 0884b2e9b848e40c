"""Local spark-submit start-up options: which archive and JIT settings, and that Spark's JVM
really maps the archive and takes the settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SPARK_SUBMIT, job_env
from fruits_dev import spark_cds


def test_submit_opts_only_name_an_archive_that_exists(tmp_path):
    archive = tmp_path / "spark.jsa"
    jit = spark_cds.JIT_OPTS
    assert spark_cds.submit_opts(archive, "-Dkeep=1") == f"-Dkeep=1 {jit}"
    assert spark_cds.submit_opts(None) == jit
    archive.write_bytes(b"\0")
    assert spark_cds.submit_opts(archive, "-Dkeep=1") == f"-Dkeep=1 {jit} -XX:SharedArchiveFile={archive} -Xshare:auto"


def test_a_jit_setting_of_the_caller_wins(tmp_path):
    mine = "-XX:CompileThresholdScaling=1"
    assert spark_cds.submit_opts(None, mine) == mine
    assert (
        "CompileThresholdScaling=10"
        not in spark_cds.with_startup_options({"SPARK_SUBMIT_OPTS": mine}, tmp_path)["SPARK_SUBMIT_OPTS"]
    )


def test_startup_options_add_to_spark_submit_opts_unless_turned_off(tmp_path):
    path = spark_cds.archive_path(tmp_path)
    assert path is not None and path.parent == tmp_path
    env = {"SPARK_SUBMIT_OPTS": "-Dkeep=1"}
    jit = spark_cds.JIT_OPTS
    no_archive_yet = spark_cds.with_startup_options(env, tmp_path)
    assert no_archive_yet["SPARK_SUBMIT_OPTS"] == f"-Dkeep=1 {jit}"
    path.write_bytes(b"\0")
    assert (
        spark_cds.with_startup_options(env, tmp_path)["SPARK_SUBMIT_OPTS"]
        == f"-Dkeep=1 {jit} -XX:SharedArchiveFile={path} -Xshare:auto"
    )
    off = {**env, "FRUITS_SPARK_CDS": "off"}
    assert spark_cds.with_startup_options(off, tmp_path) == off


def test_the_driver_jvm_runs_with_the_jit_setting(tmp_path):
    """SPARK_SUBMIT_OPTS reach the JVM that spark-submit starts for a local job."""
    script = tmp_path / "args.py"
    script.write_text(
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "print(list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()"
        ".getInputArguments()))\n"
    )
    run = subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local[1]", "--conf", "spark.ui.enabled=false", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=spark_cds.with_startup_options(spark_env(), tmp_path),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert spark_cds.JIT_OPTS in run.stdout


def test_archive_name_follows_the_java_build(tmp_path, monkeypatch):
    for name, version in (("jdk-a", 'JAVA_VERSION="17.0.1"'), ("jdk-b", 'JAVA_VERSION="21.0.2"')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "release").write_text(version + "\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk-a"))
    first = spark_cds.archive_path(tmp_path)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk-b"))
    second = spark_cds.archive_path(tmp_path)
    assert first != second and first.parent == second.parent == tmp_path


def test_built_archive_is_mapped_by_spark_driver_jvm(tmp_path):
    """Build into a fresh folder, then run a Spark job and ask the JVM where classes came from."""
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "fruits_dev.spark_cds",
            "build",
            "--dir",
            str(tmp_path / "cds"),
            "--spark-submit",
            str(SPARK_SUBMIT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=spark_env(),
    )
    assert built.returncode == 0, built.stderr
    archive = Path(built.stdout.strip().splitlines()[-1])
    assert archive.parent == tmp_path / "cds" and archive.stat().st_size > 10_000_000, built.stderr
    assert not list(archive.parent.glob("*.partial"))

    loads = tmp_path / "class-load.txt"
    env = spark_cds.with_startup_options(spark_env(), tmp_path / "cds")
    env["SPARK_SUBMIT_OPTS"] += f" -Xlog:class+load=info:file={loads}"
    work = tmp_path / "work"
    run = subprocess.run(
        [
            str(SPARK_SUBMIT),
            "--master",
            "local[2]",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.log.level=ERROR",
            str(ROOT / "fruits_dev" / "spark_cds.py"),
            "--workload",
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = loads.read_text().splitlines()
    shared = [line for line in lines if "source: shared objects file (top)" in line]
    assert any(" org.apache.spark.SparkContext " in line for line in shared)
    assert any("org.apache.spark.sql.execution.datasources.parquet." in line for line in shared)
    assert len(shared) > 5000, f"only {len(shared)} of {len(lines)} classes came from the archive"


def spark_env() -> dict[str, str]:
    """The tests' job environment without JVM options: no archive but the one under test."""
    return {k: v for k, v in job_env().items() if k != "SPARK_SUBMIT_OPTS"}
