"""The EMR backend's DAG (FRUITS_COMPUTE=emr): tasks, wiring, guards and Params, parsed without AWS."""

from __future__ import annotations

from datetime import timedelta

from conftest import DAGS
from fruits.backends.emr.sensors import EmrStepSensorWithLogs

CLUSTER_CHAIN = (
    "emr.create_cluster",
    "emr.add_featurize_step",
    "emr.wait_featurize",
    "emr.add_pca_step",
    "emr.wait_pca",
    "emr.terminate_cluster",
)


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
    assert emr_tasks == {
        f"emr.{t}"
        for t in (
            "check_region",
            "upload_code",
            "list_pca_inputs",
            "cluster_spec",
            "create_cluster",
            "add_featurize_step",
            "wait_featurize",
            "add_pca_step",
            "wait_pca",
            "terminate_cluster",
            "emr_outputs",
        )
    }

    def upstream(task_id):
        return tasks[task_id].get_flat_relative_ids(upstream=True)

    assert "emr.check_region" in upstream("emr.create_cluster")
    assert "emr.check_region" in upstream("emr.upload_code")
    assert {"emr.list_pca_inputs", "emr.upload_code"} <= upstream("emr.cluster_spec")
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
        # a failed step says why, from its logs (fruits/backends/emr/sensors.py)
        assert type(sensor) is EmrStepSensorWithLogs, type(sensor)
        assert (sensor.logs_conn_id, sensor.log_wait_seconds, sensor.log_poll_seconds) == ("aws_default", 300, 60)
        assert sensor.step_id == f"{{{{ ti.xcom_pull(task_ids='{task_id.replace('wait_', 'add_')}_step')[0] }}}}"
    for task in dag.tasks:
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=12), task.task_id
        if task.task_id.startswith("emr.") and hasattr(task, "region_name"):
            assert task.region_name == "{{ params.region }}" and task.aws_conn_id == "aws_default", task.task_id
    assert tasks["emr.check_region"].retries == 0 and create.retries == 0 and terminate.retries >= 2


def test_emr_params_take_defaults_from_the_environment(monkeypatch):
    dag = load_emr_dag(
        monkeypatch,
        FRUITS_EMR_REGION="eu-central-1",
        FRUITS_EMR_CORE_SPOT="true",
        FRUITS_EMR_CORE_INSTANCE_COUNT="5",
        FRUITS_EMR_SUBNET_ID="subnet-1",
    )
    params = dag.params
    assert params["region"] == "eu-central-1" and params["core_spot"] is True
    assert params["core_instance_count"] == 5 and "allow_non_eu_region" not in params
    assert params["release_label"] == "emr-7.13.0" and params["idle_timeout"] == 1800
    default = load_emr_dag(monkeypatch, FRUITS_EMR_REGION="eu-west-3")
    assert default.params["region"] == "eu-west-3"


def test_a_bad_emr_setting_is_an_import_error(monkeypatch):
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")
    monkeypatch.setenv("FRUITS_EMR_RELEASE_LABEL", "emr-6.15.0")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert any("emr-6.15.0" in err for err in bag.import_errors.values()), bag.import_errors


def worst_case_seconds(task) -> float:
    """Every attempt timing out and every retry delay at its maximum (unbounded: infinite)."""
    if task.retries and task.max_retry_delay is None and task.retry_exponential_backoff:
        return float("inf")
    delay = (task.max_retry_delay or task.retry_delay).total_seconds()
    return (task.retries + 1) * task.execution_timeout.total_seconds() + task.retries * delay


def test_a_timed_out_run_cannot_skip_the_terminate_teardown(monkeypatch):
    """The parsed tasks' own timeouts and retries, from create_cluster to the end of terminate_cluster,
    after the longest sensor_timeout the form allows and the plan, fit in dagrun_timeout."""
    dag = load_emr_dag(monkeypatch)
    chain = sum(worst_case_seconds(dag.task_dict[t]) for t in CLUSTER_CHAIN)
    longest_wait = dag.params.get_param("sensor_timeout").schema["maximum"]
    assert longest_wait + chain + 30 * 60 <= dag.dagrun_timeout.total_seconds(), (longest_wait, chain)


def test_timeouts_the_run_cannot_afford_are_an_import_error(monkeypatch):
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")
    monkeypatch.setenv("FRUITS_EMR_FEATURIZE_TIMEOUT", str(20 * 3600))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    errors = "\n".join(bag.import_errors.values())
    assert "skips the terminate teardown" in errors and "FRUITS_RUN_TIMEOUT" in errors, bag.import_errors


def test_the_form_offers_only_what_the_deployment_allows(monkeypatch):
    dag = load_emr_dag(
        monkeypatch,
        FRUITS_EMR_ALLOWED_REGIONS="eu-west-3,eu-central-1",
        FRUITS_EMR_ALLOWED_INSTANCE_TYPES="m5.xlarge,c6i.2xlarge",
        FRUITS_EMR_MAX_CORE_NODES="4",
    )
    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    assert schema["region"]["examples"] == ["eu-west-3", "eu-central-1"]  # check_region refuses the others
    assert (
        schema["core_instance_type"]["enum"] == schema["master_instance_type"]["enum"] == ["m5.xlarge", "c6i.2xlarge"]
    )
    assert schema["core_instance_count"]["maximum"] == schema["core_max_instance_count"]["maximum"] == 4
    assert "allow_non_eu_region" not in dag.params
