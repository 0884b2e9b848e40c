"""The local backend's spark-submit task: a failed job says why in its own words, first; a job of
the plan reaches the bucket through S3A with the DAG's AWS connection."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException

from fruits import contract, plan, spark_s3a
from fruits.backends.local.operators import SparkJobOperator, TimedSparkSubmitOperator, s3a_submit_settings

PROVIDER_FAILURE = (
    "Cannot execute: spark-submit --master local[*] --name fruits-featurize /repo/spark_jobs/featurize.py "
    "--weights s3://b/broken.weights.h5. Error code is: 2.\nLast spark-submit output:\n"
    "2026-12-07 16:26:12,320 featurize INFO model cache miss\n"
    "featurize: error: cannot load the weights file s3://b/broken.weights.h5: file signature not found\n"
    "26/12/07 16:26:16 INFO ShutdownHookManager: Shutdown hook called"
)


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


@pytest.fixture
def s3_connection(fruits_s3_connection, monkeypatch):
    monkeypatch.setattr(spark_s3a, "resolved_jars", lambda version: ["/cache/hadoop-aws.jar", "/cache/bundle.jar"])


def test_s3a_settings_carry_the_connection_the_jars_and_the_tasks_own_conf(s3_connection):
    conf, env = s3a_submit_settings(
        "fruits_s3",
        {
            "spark.driver.memory": "2g",
            "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1",
            "spark.jars": "/elsewhere.jar",
        },
        {"PYSPARK_PYTHON": "py"},
    )
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000" and conf["spark.driver.memory"] == "2g"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"  # the task's conf overrides the connection's
    assert conf["spark.jars"] == "/cache/hadoop-aws.jar,/cache/bundle.jar"  # but never the S3A jars
    assert env == {"PYSPARK_PYTHON": "py", "AWS_ACCESS_KEY_ID": "AKIDCONN", "AWS_SECRET_ACCESS_KEY": "conn-secret"}


def test_a_plan_job_is_submitted_with_its_arguments_and_the_s3a_settings(s3_connection, monkeypatch):
    batch = contract.Batch(bucket="b", batch_id="b1", images=3, committed_batches=[], committed_features_rows=0)
    job = plan.pca_job(batch, "manual__1", pca_k=5, pca_variance=0.95)
    submitted = {}
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: submitted.update(vars(self)))
    operator = SparkJobOperator(
        task_id="pca",
        job=job.to_xcom(),
        spark_jobs_dir=Path("/repo/spark_jobs"),
        aws_conn_id="fruits_s3",
        conf={"spark.driver.memory": "2g"},
        env_vars={"A": "1"},
    )
    assert operator.execute({})["seconds"] >= 0
    assert submitted["application"] == "/repo/spark_jobs/pca.py" and submitted["application_args"] == job.args
    assert submitted["name"] == "fruits-pca"
    assert (submitted["conf"], submitted["env_vars"]) == s3a_submit_settings(
        "fruits_s3", {"spark.driver.memory": "2g"}, {"A": "1"}
    )
