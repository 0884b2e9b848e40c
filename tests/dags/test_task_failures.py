"""Both DAGs, both backends: every task fails at once on a fruits.errors.PermanentError and takes
its retries on any other exception, as Airflow's task runner decides it from the parsed tasks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import structlog
from airflow.sdk.execution_time import task_runner

from conftest import DAGS
from fruits.backends.emr.code import CodeMismatch
from fruits.params import InvalidParams


def load(monkeypatch, compute: str) -> list:
    monkeypatch.setenv("FRUITS_COMPUTE", compute)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return [bag.dags["fruits_pipeline"], bag.dags["fruits_classifier"]]


def outcome(task, exc: Exception) -> str:
    """The state the task runner gives a task whose first try raised `exc` (the API server says a
    retry is due when the task has retries)."""
    ti = SimpleNamespace(
        task=task,
        try_number=1,
        end_date=None,
        rendered_map_index=None,
        stats_tags={},
        _failure_metrics_emitted=False,
        _ti_context_from_server=SimpleNamespace(max_tries=task.retries, should_retry=task.retries > 0),
    )
    _, state = task_runner._handle_current_task_failed(ti, exc, structlog.get_logger())
    return state.value


@pytest.mark.parametrize("compute", ["local", "emr"])
def test_every_task_fails_at_once_on_a_permanent_error_and_retries_anything_else(monkeypatch, compute):
    retried = set()
    for dag in load(monkeypatch, compute):
        for task in dag.tasks:
            assert outcome(task, InvalidParams("invalid run parameters: bucket 'Bad'")) == "failed", task.task_id
            assert outcome(task, CodeMismatch("code/<version>/ holds files that differ")) == "failed", task.task_id
            plain = outcome(task, ValueError("a bug, or a transient error"))
            assert plain == ("up_for_retry" if task.retries else "failed"), task.task_id
            if plain == "up_for_retry":
                retried.add(task.task_id)
    # Tasks that do retry: a permanent error does not use their retries up.
    assert {"plan_batch", "commit_batch", "publish_report"} <= retried
    assert ("local_spark.plan_jobs" if compute == "local" else "emr.upload_code") in retried


def test_the_pipelines_first_tasks_refuse_bad_params_before_reaching_s3(monkeypatch):
    pipeline, _ = load(monkeypatch, "local")
    bad = {**pipeline.params.dump(), "bucket": "Not_A_Bucket", "pca_k": 5000}
    for task_id in ("wait_for_new_images", "plan_batch"):
        with pytest.raises(InvalidParams, match=r"invalid run parameters: bucket 'Not_A_Bucket'.*pca_k 5000"):
            pipeline.task_dict[task_id].python_callable(params=bad)
