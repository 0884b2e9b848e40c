"""Tasks of the local backend (FRUITS_COMPUTE=local): stage, spark-submit, publish.

    stage_images -> featurize (spark-submit) -> publish_features -> stage_pca_inputs
        -> pca (spark-submit) -> publish_pca

`build(batch, settings)` adds them to the DAG being defined and returns the XComArg of the
last task: a `ComputeResult` (as a dict), the same record the EMR backend returns.
`build_classifier(pca_run, settings)` does the same for the classifier DAG:

    stage_vectors -> classify (spark-submit) -> publish_classifier
The jobs' command lines come from `fruits.contract`, built by the staging tasks from the run's
Params and handed to spark-submit through XCom.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from airflow.sdk import task, task_group

from fruits import contract, layout
from fruits.backends.local.operators import TimedSparkSubmitOperator
from fruits.settings import Settings


def params(settings: Settings) -> dict:
    """The local backend adds nothing to the trigger form."""
    return {}


def spark_env() -> dict[str, str]:
    """Spark's Python workers must run the interpreter that has TensorFlow and PySpark."""
    python = os.environ.get("PYSPARK_PYTHON") or sys.executable
    return {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": os.environ.get("PYSPARK_DRIVER_PYTHON") or python,
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def spark_conf() -> dict[str, str]:
    return {
        "spark.driver.memory": os.environ.get("FRUITS_SPARK_DRIVER_MEMORY", "4g"),
        "spark.log.level": "WARN",
        "spark.ui.showConsoleProgress": "false",
    }


def spark_job(task_id: str, script: str, args, settings: Settings, timeout: timedelta):
    """spark-submit one of the project's jobs on the Spark connection (local[*])."""
    return TimedSparkSubmitOperator(
        task_id=task_id,
        application=str(settings.spark_jobs_dir / script),
        conn_id=settings.spark_conn_id,
        name=f"fruits-{task_id}",
        application_args=args,
        conf=spark_conf(),
        env_vars=spark_env(),
        execution_timeout=timeout,
    )


def _bucket_of(record, settings: Settings):
    from fruits.storage import Bucket

    return Bucket.connect(settings.aws_conn_id, record.bucket)


def build(batch, settings: Settings):
    @task_group(group_id="local_spark")
    def local_spark(batch):
        @task(execution_timeout=timedelta(hours=1))
        def stage_images(batch: dict, params: dict | None = None) -> dict:
            from fruits.backends.local import staging

            planned = contract.Batch.from_xcom(batch)
            staged = staging.stage_images(_bucket_of(planned, settings), planned.batch_id, settings.work_dir)
            staged["featurize_args"] = contract.featurize_args(
                manifest=staged["manifest"], outputs=staging.featurize_outputs(settings.work_dir, planned.batch_id),
                weights=params["weights"], image_size=params["image_size"],
                model_cache=str(settings.work_dir / "model-cache"))
            return staged

        @task
        def publish_features(batch: dict, staged: dict) -> dict:
            from fruits.backends.local import staging

            planned = contract.Batch.from_xcom(batch)
            return staging.publish_batch(_bucket_of(planned, settings), planned.batch_id, settings.work_dir)

        @task
        def stage_pca_inputs(batch: dict, published: dict, params: dict | None = None,
                             run_id: str | None = None) -> list[str]:
            from fruits.backends.local import staging

            from fruits.core import pca_policy

            planned = contract.Batch.from_xcom(batch)
            refit = params.get("pca_refit") or "auto"
            angle = float(params.get("pca_refit_angle") or pca_policy.DEFAULT_REFIT_ANGLE)
            staged = staging.stage_pca_inputs(_bucket_of(planned, settings), planned, settings.work_dir, run_id,
                                              pca_k=params["pca_k"], pca_variance=params["pca_variance"],
                                              refit=refit, refit_angle=angle)
            return contract.pca_args(
                features=staged["features"], outputs=staging.pca_outputs(settings.work_dir, run_id),
                pca_k=params["pca_k"], pca_variance=params["pca_variance"], previous=staged["previous"],
                history_list=staged["history_list"], refit=staged["refit"], refit_angle=angle,
                space_id=layout.safe_run_id(run_id), vectors_uri=layout.pca_outputs(planned.bucket, run_id).vectors)

        @task
        def publish_pca(batch: dict, staged: dict, featurized: dict, published: dict, pca_run: dict,
                        run_id: str | None = None) -> dict:
            from fruits.backends.local import staging

            planned = contract.Batch.from_xcom(batch)
            pca_uris = staging.publish_pca(_bucket_of(planned, settings), run_id, settings.work_dir)
            return contract.ComputeResult(
                pca_prefix=layout.pca_prefix(run_id),
                outputs={"features": published["features"], "rejects": published["rejects"], **pca_uris},
                stage_seconds={"stage_images": staged["seconds"], "featurize": featurized["seconds"],
                               "publish_features": published["seconds"], "pca": pca_run["seconds"]},
            ).to_xcom()

        staged = stage_images(batch)
        featurize = spark_job("featurize", contract.FEATURIZE_SCRIPT, staged["featurize_args"], settings,
                              timedelta(hours=6))
        published = publish_features(batch, staged)
        featurize >> published
        pca = spark_job("pca", contract.PCA_SCRIPT, stage_pca_inputs(batch, published), settings,
                        timedelta(hours=2))
        return publish_pca(batch, staged, featurize.output, published, pca.output)

    return local_spark(batch)


def build_classifier(pca_run, settings: Settings):
    @task_group(group_id="local_spark")
    def local_spark(pca_run):
        @task(execution_timeout=timedelta(hours=1))
        def stage_vectors(pca_run: dict, run_id: str | None = None) -> list[str]:
            from fruits.backends.local import staging

            chosen = contract.PcaRun.from_xcom(pca_run)
            local = staging.stage_vectors(_bucket_of(chosen, settings), chosen, settings.work_dir, run_id)
            return contract.classify_args(vectors=local.get("vectors"), vectors_list=local.get("vectors_list"),
                                          pca_run=chosen.run_id,
                                          outputs=staging.classifier_outputs(settings.work_dir, run_id))

        @task
        def publish_classifier(pca_run: dict, classified: dict, run_id: str | None = None) -> dict:
            from fruits.backends.local import staging

            chosen = contract.PcaRun.from_xcom(pca_run)
            return contract.ComputeResult(
                pca_prefix=chosen.pca_prefix,
                outputs=staging.publish_classifier(_bucket_of(chosen, settings), run_id, settings.work_dir),
                stage_seconds={"classify": classified["seconds"]},
            ).to_xcom()

        classify = spark_job("classify", contract.CLASSIFY_SCRIPT, stage_vectors(pca_run), settings,
                             timedelta(hours=2))
        return publish_classifier(pca_run, classify.output)

    return local_spark(pca_run)
