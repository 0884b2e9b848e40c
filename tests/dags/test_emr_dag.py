"""The EMR backend's DAG (FRUITS_COMPUTE=emr): tasks, wiring, guards and Params, parsed without AWS."""

from __future__ import annotations

from datetime import timedelta

from conftest import DAGS

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
        "check_region", "upload_code", "list_pca_inputs", "cluster_spec", "create_cluster", "add_featurize_step",
        "wait_featurize", "add_pca_step", "wait_pca", "terminate_cluster", "emr_outputs")}

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
