"""Tasks of the local backend (FRUITS_COMPUTE=local): the run's jobs through spark-submit.

    plan_jobs -> featurize (spark-submit) -> pca (spark-submit) -> local_outputs

`build(batch, settings)` adds them to the DAG being defined and returns the XComArg of the
last task: a `ComputeResult` (as a dict), the same record the EMR backend returns.
`build_classifier(pca_run, settings)` does the same for the classifier DAG:

    plan_classify -> classify (spark-submit) -> local_outputs

The jobs are the plan's (`fruits.plan`), the same the EMR backend submits as steps: Spark reads
and writes the bucket itself through S3A (`SparkJobOperator`), on the Spark connection
(`FRUITS_SPARK_CONN_ID`, local[*] by default); nothing is copied out of the bucket.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from airflow.sdk import task, task_group

from fruits import contract, layout, plan
from fruits.backends.local.operators import SparkJobOperator
from fruits.settings import Settings


def params(settings: Settings) -> dict:
    """The local backend adds nothing to the trigger form."""
    return {}


def spark_env() -> dict[str, str]:
    """Spark's Python workers must run the interpreter that has TensorFlow and PySpark."""
    python = os.environ.get("PYSPARK_PYTHON") or sys.executable
    return {
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": os.environ.get("PYSPARK_DRIVER_PYTHON") or python,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def spark_conf(settings: Settings) -> dict[str, str]:
    return {
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.log.level": "WARN",
        "spark.ui.showConsoleProgress": "false",
    }


def spark_job(task_id: str, job, settings: Settings, timeout: timedelta) -> SparkJobOperator:
    """spark-submit one job of the run's plan on the Spark connection."""
    return SparkJobOperator(
        task_id=task_id,
        job=job,
        spark_jobs_dir=settings.spark_jobs_dir,
        aws_conn_id=settings.aws_conn_id,
        conn_id=settings.spark_conn_id,
        conf=spark_conf(settings),
        env_vars=spark_env(),
        execution_timeout=timeout,
    )


def _bucket_of(record, settings: Settings):
    from fruits.storage import Bucket

    return Bucket.connect(settings.aws_conn_id, record.bucket)


def build(batch, settings: Settings):
    @task_group(group_id="local_spark")
    def local_spark(batch):
        @task
        def plan_jobs(batch: dict, params: dict | None = None, run_id: str | None = None) -> dict:
            """The run's two jobs, and the list of features datasets its PCA may read, in the bucket."""
            planned = contract.Batch.from_xcom(batch)
            plan.write_pca_inputs(_bucket_of(planned, settings), planned)
            return {job.name: job.to_xcom() for job in plan.pipeline_jobs(planned, run_id, params)}

        @task
        def local_outputs(jobs: dict, featurized: dict, pca: dict, run_id: str | None = None) -> dict:
            return plan.compute_result(
                list(jobs.values()),
                pca_prefix=layout.pca_prefix(run_id),
                stage_seconds={"featurize": featurized["seconds"], "pca": pca["seconds"]},
            ).to_xcom()

        jobs = plan_jobs(batch)
        featurize = spark_job("featurize", jobs[plan.FEATURIZE], settings, timedelta(hours=6))
        pca = spark_job("pca", jobs[plan.PCA], settings, timedelta(hours=2))
        featurize >> pca
        return local_outputs(jobs, featurize.output, pca.output)

    return local_spark(batch)


def build_classifier(pca_run, settings: Settings):
    @task_group(group_id="local_spark")
    def local_spark(pca_run):
        @task(multiple_outputs=False)  # one Job record, not one XCom per field
        def plan_classify(pca_run: dict, run_id: str | None = None) -> dict:
            return plan.classify_job(contract.PcaRun.from_xcom(pca_run), run_id).to_xcom()

        @task
        def local_outputs(pca_run: dict, job: dict, classified: dict) -> dict:
            return plan.compute_result(
                [job],
                pca_prefix=contract.PcaRun.from_xcom(pca_run).pca_prefix,
                stage_seconds={"classify": classified["seconds"]},
            ).to_xcom()

        job = plan_classify(pca_run)
        classify = spark_job("classify", job, settings, timedelta(hours=2))
        return local_outputs(pca_run, job, classify.output)

    return local_spark(pca_run)
