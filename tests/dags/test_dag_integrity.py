"""DAG integrity: parses for both backends, expected tasks and wiring, cheap to import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from conftest import DAGS, ROOT

DAG_ID = "fruits_pipeline"


def load_dagbag(monkeypatch, compute: str):
    monkeypatch.setenv("FRUITS_COMPUTE", compute)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[DAG_ID]  # bag.get_dag() would query the metadata DB


@pytest.fixture
def local_dag(monkeypatch):
    return load_dagbag(monkeypatch, "local")


def downstream(dag, task_id: str) -> set[str]:
    return set(dag.task_dict[task_id].downstream_task_ids)


def test_local_dag_has_the_expected_flow(local_dag):
    dag = local_dag
    assert set(dag.task_dict) == {
        "wait_for_new_images",
        "plan_batch",
        "local_spark.plan_jobs",
        "local_spark.featurize",
        "local_spark.pca",
        "local_spark.local_outputs",
        "validate",
        "commit_batch",
        "publish_report",
    }
    assert downstream(dag, "wait_for_new_images") == {"plan_batch"}
    assert "local_spark.plan_jobs" in downstream(dag, "plan_batch")
    assert downstream(dag, "local_spark.plan_jobs") >= {"local_spark.featurize", "local_spark.pca"}
    assert "local_spark.pca" in downstream(dag, "local_spark.featurize")
    assert "local_spark.local_outputs" in downstream(dag, "local_spark.pca")
    assert "validate" in downstream(dag, "local_spark.local_outputs")
    assert downstream(dag, "validate") >= {"commit_batch"}
    assert "publish_report" in downstream(dag, "commit_batch")
    assert dag.max_active_runs == 1 and dag.catchup is False
    # Consumers can schedule on the pipeline's outputs (Airflow assets).
    outlets = {asset.name for asset in dag.task_dict["publish_report"].outlets}
    assert outlets == {"fruits_features", "fruits_pca_vectors"}


def test_params_offer_the_trigger_form(local_dag):
    params = local_dag.params
    for name in ("bucket", "landing_prefix", "weights", "image_size", "pca_k", "pca_variance", "sensor_timeout"):
        assert name in params, name
    assert params["landing_prefix"] == "landing/"
    assert params["weights"] == "imagenet"
    assert params["image_size"] == 224
    assert params["pca_k"] is None and params["pca_variance"] == 0.95


def test_params_take_defaults_from_the_environment(monkeypatch):
    monkeypatch.setenv("FRUITS_BUCKET", "my-fruit-bucket")
    monkeypatch.setenv("FRUITS_WEIGHTS", "none")
    monkeypatch.setenv("FRUITS_IMAGE_SIZE", "160")
    dag = load_dagbag(monkeypatch, "local")
    assert dag.params["bucket"] == "my-fruit-bucket"
    assert dag.params["weights"] == "none" and dag.params["image_size"] == 160


def test_every_task_has_retries_and_a_timeout(local_dag):
    for task in local_dag.tasks:
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=12), task.task_id
        assert task.retries is not None, task.task_id
    assert local_dag.dagrun_timeout is not None
    # Deterministic failures must not be retried; the rest are.
    assert local_dag.task_dict["validate"].retries == 0
    assert local_dag.task_dict["plan_batch"].retries >= 1
    assert local_dag.task_dict["local_spark.featurize"].retries >= 1


def test_sensor_waits_without_holding_a_worker(local_dag):
    sensor = local_dag.task_dict["wait_for_new_images"]
    assert sensor.mode == "reschedule"


def test_spark_tasks_run_the_planned_jobs_with_the_projects_interpreter(local_dag):
    featurize = local_dag.task_dict["local_spark.featurize"]
    pca = local_dag.task_dict["local_spark.pca"]
    for task in (featurize, pca):
        assert task._conn_id == "spark_default" and task.aws_conn_id == "aws_default"
        assert task.spark_jobs_dir == ROOT / "spark_jobs"
        assert os.path.exists(task.env_vars["PYSPARK_PYTHON"])
    # The jobs themselves (script, arguments) are the run's plan, built at run time by fruits.plan.
    assert (featurize.job.operator.task_id, featurize.job.key) == ("local_spark.plan_jobs", "featurize")
    assert (pca.job.operator.task_id, pca.job.key) == ("local_spark.plan_jobs", "pca")


def test_unknown_backend_is_an_import_error(monkeypatch):
    monkeypatch.setenv("FRUITS_COMPUTE", "kubernetes")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert any("FRUITS_COMPUTE must be one of" in err for err in bag.import_errors.values())


@pytest.mark.parametrize("compute", ["local", "emr"])
def test_dag_file_imports_fast_without_tensorflow_or_pyspark(compute):
    """Measured in a fresh interpreter, after Airflow itself is imported (that cost is Airflow's)."""
    code = f"""
import json, sys, time
import importlib.util
import airflow.sdk
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("fruits_pipeline", {str(DAGS / "fruits_pipeline.py")!r})
fruits_pipeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fruits_pipeline)
elapsed = time.perf_counter() - started
heavy = [m for m in ("tensorflow", "keras", "pyspark", "torch") if m in sys.modules]
print(json.dumps({{"seconds": elapsed, "heavy": heavy, "tasks": len(fruits_pipeline.pipeline_dag.tasks)}}))
"""
    env = {**os.environ, "FRUITS_COMPUTE": compute}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["tasks"] >= 8
    assert result["seconds"] < 2.0, result
