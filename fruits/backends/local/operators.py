"""The local backend's spark-submit tasks: SparkSubmitOperator, plus what the run report needs
and what a job of the plan needs to reach the bucket."""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException

from fruits.job_output import error_line


class TimedSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator that returns its wall-clock seconds (XCom) for the run report, and
    whose failure starts with the job's own error line (the provider's starts "Cannot execute:
    <command>"; its tail of spark-submit's output holds the job's words)."""

    def execute(self, context) -> dict:
        started = time.perf_counter()
        try:
            super().execute(context)
        except AirflowException as exc:
            reason = error_line(str(exc))
            if not reason:
                raise
            raise AirflowException(f"{reason}\n{exc}") from None  # the report keeps the first line
        return {"seconds": round(time.perf_counter() - started, 2)}


def s3a_submit_settings(
    aws_conn_id: str | None, conf: dict | None = None, env: dict | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """spark-submit's conf and environment for a job of the plan to reach the bucket through S3A:
    the AWS connection's endpoint and region (`conf` may override them), the S3A jars resolved for
    this pyspark, the connection's credentials in the environment. One function, so anything that
    spark-submits a plan's job outside the DAG (benchmarks/scale.py) runs it as the DAG does."""
    from fruits import spark_s3a

    s3a, credentials = spark_s3a.s3a_for_connection(aws_conn_id)
    jars = spark_s3a.resolved_jars(metadata.version("pyspark"))
    return {**s3a, **(conf or {}), "spark.jars": ",".join(jars)}, {**(env or {}), **credentials}


class SparkJobOperator(TimedSparkSubmitOperator):
    """spark-submit of one job of the run's plan (`fruits.plan.Job`, usually an XCom of the task
    that planned it), on s3:// URIs: Spark reads and writes the bucket through S3A, configured
    from the DAG's AWS connection (endpoint, region; credentials in spark-submit's environment)
    with the S3A jars `make venv` resolved for this Spark (fruits.spark_s3a)."""

    template_fields = (*SparkSubmitOperator.template_fields, "job")

    def __init__(self, *, job, spark_jobs_dir: Path, aws_conn_id: str | None, **kwargs) -> None:
        super().__init__(application="", **kwargs)
        self.job = job
        self.spark_jobs_dir = Path(spark_jobs_dir)
        self.aws_conn_id = aws_conn_id

    def execute(self, context) -> dict:
        from fruits import plan

        job = plan.Job.from_xcom(self.job)
        self.application = str(self.spark_jobs_dir / job.script)
        self.application_args = job.args
        self.name = job.app_name
        self.conf, self.env_vars = s3a_submit_settings(self.aws_conn_id, self.conf, self.env_vars)
        self.log.info("%s reads %s; writes %s", job.script, ", ".join(job.reads), ", ".join(job.writes.values()))
        return super().execute(context)
