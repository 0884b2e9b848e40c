"""fruits_classifier: scheduled on the pipeline's PCA Asset, the same backends, parsed without AWS."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from conftest import DAGS
from fruits import assets
from fruits.backends.emr import budget
from fruits.params import InvalidParams
from fruits.settings import Settings


def load(monkeypatch, compute: str):
    monkeypatch.setenv("FRUITS_COMPUTE", compute)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["fruits_classifier"], bag.dags["fruits_pipeline"]


@pytest.mark.parametrize("compute", ["local", "emr"])
def test_the_classifier_runs_on_every_committed_pca_run(monkeypatch, compute):
    classifier, pipeline = load(monkeypatch, compute)
    # Scheduled on exactly the Asset that the pipeline's last task updates after a commit.
    assert classifier.timetable.asset_condition.objects == (assets.PCA_VECTORS,)
    publish = pipeline.task_dict["publish_report"]
    assert assets.PCA_VECTORS in publish.outlets and "commit_batch" in publish.upstream_task_ids
    assert classifier.params["pca_run_id"] == "" and classifier.max_active_runs == 1
    assert classifier.task_dict["choose_pca_run"].retries == 0


def test_the_local_classifier_plans_classify_then_spark_submits_it(monkeypatch):
    dag, _ = load(monkeypatch, "local")
    assert set(dag.task_dict) == {
        "choose_pca_run",
        "local_spark.plan_classify",
        "local_spark.classify",
        "local_spark.local_outputs",
        "validate_classifier",
        "publish_classifier",
    }
    classify = dag.task_dict["local_spark.classify"]
    assert classify.job.operator.task_id == "local_spark.plan_classify"
    assert "local_spark.local_outputs" in dag.task_dict["validate_classifier"].upstream_task_ids


def test_the_emr_classifier_has_a_cluster_of_its_own_always_terminated(monkeypatch):
    dag, _ = load(monkeypatch, "emr")
    tasks = dag.task_dict
    assert {t for t in tasks if t.startswith("emr.")} == {
        f"emr.{t}"
        for t in (
            "check_region",
            "upload_code",
            "classifier_spec",
            "create_cluster",
            "add_classify_step",
            "wait_classify",
            "terminate_cluster",
            "emr_outputs",
        )
    }
    create, terminate = tasks["emr.create_cluster"], tasks["emr.terminate_cluster"]
    assert create.is_setup and terminate.is_teardown and terminate.on_failure_fail_dagrun
    assert "emr.wait_classify" in terminate.upstream_task_ids
    assert tasks["emr.wait_classify"].deferrable and tasks["emr.wait_classify"].retries == 0
    assert "region" in dag.params and "allow_non_eu_region" not in dag.params  # regions: a deployment setting


def test_the_classifier_run_timeout_is_a_deployment_setting(monkeypatch):
    monkeypatch.setenv("FRUITS_CLASSIFIER_RUN_TIMEOUT", "7200")
    dag, pipeline = load(monkeypatch, "local")
    assert dag.dagrun_timeout == timedelta(hours=2)
    assert pipeline.dagrun_timeout == timedelta(seconds=Settings().run_timeout)  # the pipeline's own setting


def test_an_emr_classifier_run_timeout_too_short_for_the_teardown_is_a_parse_error(monkeypatch):
    """Budget-checked like the pipeline's: a timed-out run would skip terminate_cluster."""
    settings = Settings()
    needed = budget.cluster_seconds(settings, budget.classifier_steps(settings)) + budget.PREPARATION_ALLOWANCE
    assert needed <= settings.classifier_run_timeout  # the default fits
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")
    monkeypatch.setenv("FRUITS_CLASSIFIER_RUN_TIMEOUT", str(needed - 1))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert "fruits_pipeline" in bag.dags and "fruits_classifier" not in bag.dags
    [error] = bag.import_errors.values()
    assert f"fruits_classifier: dagrun_timeout {needed - 1}s is too short" in error
    assert "FRUITS_CLASSIFIER_RUN_TIMEOUT" in error


@pytest.mark.parametrize("compute", ["local", "emr"])
def test_the_classifier_params_are_checked_like_the_pipelines(monkeypatch, compute):
    """The same bucket schema as the pipeline's form, and the same checks in code (InvalidParams)
    in its first task, before anything reads S3."""
    dag, pipeline = load(monkeypatch, compute)
    assert dag.params.get_param("bucket").schema == pipeline.params.get_param("bucket").schema
    choose = dag.task_dict["choose_pca_run"].python_callable
    bad = {**dag.params.dump(), "bucket": "Not_A_Bucket", "pca_run_id": "../other run"}
    with pytest.raises(InvalidParams, match=r"invalid run parameters: bucket 'Not_A_Bucket' .*; pca_run_id "):
        choose(params=bad, triggering_asset_events=None)
    event = SimpleNamespace(extra={"bucket": "Someone_Elses", "run_id": "manual__1"})
    with pytest.raises(InvalidParams, match="bucket 'Someone_Elses' is not a valid S3 bucket name"):
        choose(params=dag.params.dump(), triggering_asset_events={assets.PCA_VECTORS: [event]})
    if compute == "emr":  # checked again right before a cluster is requested
        with pytest.raises(InvalidParams, match="pca_run_id '../other run'"):
            dag.task_dict["emr.classifier_spec"].python_callable(
                pca_run={}, code={}, checked={}, params={**dag.params.dump(), "pca_run_id": "../other run"}
            )
