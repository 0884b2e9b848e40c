"""The local backend's spark-submit task: a failed job says why in its own words, first."""

from __future__ import annotations

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException

from fruits.backends.local.operators import TimedSparkSubmitOperator

PROVIDER_FAILURE = (
    "Cannot execute: spark-submit --master local[*] --name fruits-featurize /repo/spark_jobs/featurize.py "
    "--weights s3://b/broken.weights.h5. Error code is: 2.\nLast spark-submit output:\n"
    "2026-12-07 16:26:12,320 featurize INFO model cache miss\n"
    "featurize: error: cannot load the weights file s3://b/broken.weights.h5: file signature not found\n"
    "26/12/07 16:26:16 INFO ShutdownHookManager: Shutdown hook called")


def operator() -> TimedSparkSubmitOperator:
    return TimedSparkSubmitOperator(task_id="featurize", application="/repo/spark_jobs/featurize.py")


def test_a_failed_job_raises_its_own_error_line_first(monkeypatch):
    def fail(self, context):
        raise AirflowException(PROVIDER_FAILURE)

    monkeypatch.setattr(SparkSubmitOperator, "execute", fail)
    with pytest.raises(AirflowException) as raised:
        operator().execute({})
    first, *rest = str(raised.value).splitlines()
    assert first == "featurize: error: cannot load the weights file s3://b/broken.weights.h5: file signature not found"
    assert rest[0].startswith("Cannot execute: spark-submit")  # the provider's message follows


def test_a_failure_without_the_jobs_words_is_the_providers_and_success_returns_seconds(monkeypatch):
    def fail(self, context):
        raise AirflowException("Cannot execute: spark-submit ... Error code is: 137.")

    monkeypatch.setattr(SparkSubmitOperator, "execute", fail)
    with pytest.raises(AirflowException, match=r"^Cannot execute: spark-submit \.\.\. Error code is: 137\.$"):
        operator().execute({})
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: None)
    assert operator().execute({})["seconds"] >= 0
