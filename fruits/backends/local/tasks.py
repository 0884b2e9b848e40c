"""Tasks of the local backend (FRUITS_COMPUTE=local): stage, spark-submit, publish.

    stage_images -> featurize (spark-submit) -> publish_features -> stage_pca_inputs
        -> pca (spark-submit) -> publish_pca

`build(batch)` adds them to the DAG being defined and returns the XComArg of the last task:
a dict with the PCA prefix, the output URIs and the seconds of every stage.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from airflow.sdk import task, task_group

from fruits import layout
from fruits.operators import TimedSparkSubmitOperator
from fruits.settings import Settings

PCA_SIZE_ARGS = [
    "{{ '--k' if params.pca_k else '--variance' }}",
    "{{ params.pca_k if params.pca_k else params.pca_variance }}",
]


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


def spark_job(task_id: str, script: str, args: list, settings: Settings, timeout: timedelta):
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


def build(batch, settings: Settings):
    @task_group(group_id="local_spark")
    def local_spark(batch):
        @task(execution_timeout=timedelta(hours=1))
        def stage_images(batch: dict, params: dict | None = None) -> dict:
            from fruits import local_backend, storage

            hook = storage.s3_hook(settings.aws_conn_id)
            return local_backend.stage_images(hook, batch["bucket"], batch["batch_id"], settings.work_dir)

        staged = stage_images(batch)

        featurize = spark_job("featurize", "featurize.py", [
            "--manifest", staged["manifest"], "--output", staged["output"], "--rejects", staged["rejects"],
            "--weights", "{{ params.weights }}", "--image-size", "{{ params.image_size }}",
        ], settings, timedelta(hours=6))

        @task
        def publish_features(batch: dict, staged: dict) -> dict:
            from fruits import local_backend, storage

            hook = storage.s3_hook(settings.aws_conn_id)
            return local_backend.publish_batch(hook, batch["bucket"], batch["batch_id"], settings.work_dir, staged)

        published = publish_features(batch, staged)

        @task
        def stage_pca_inputs(batch: dict, published: dict, run_id: str | None = None) -> dict:
            from fruits import local_backend, storage

            hook = storage.s3_hook(settings.aws_conn_id)
            folders = local_backend.stage_committed_features(
                hook, batch["bucket"], batch["committed_batches"], settings.work_dir)
            folders.append(str(local_backend.features_mirror(settings.work_dir, batch["batch_id"])))
            out = local_backend.pca_dir(settings.work_dir, run_id)
            return {"features": ",".join(folders), "output": str(out / "vectors"),
                    "model": str(out / "model"), "report": str(out / "report.json")}

        pca_inputs = stage_pca_inputs(batch, published)
        featurize >> published

        pca = spark_job("pca", "pca.py", [
            "--features", pca_inputs["features"], "--output", pca_inputs["output"],
            "--model", pca_inputs["model"], "--report", pca_inputs["report"], "--allow-empty",
            *PCA_SIZE_ARGS,
        ], settings, timedelta(hours=2))

        @task
        def publish_pca(batch: dict, staged: dict, featurized: dict, published: dict, pca_run: dict,
                        run_id: str | None = None) -> dict:
            from fruits import local_backend, storage

            hook = storage.s3_hook(settings.aws_conn_id)
            pca_uri = local_backend.publish_pca(hook, batch["bucket"], run_id, settings.work_dir)["pca"]
            return {
                "pca_prefix": layout.pca_prefix(run_id),
                "outputs": {"features": published["features"], "rejects": published["rejects"], "pca": pca_uri},
                "stage_seconds": {"stage_images": staged["seconds"], "featurize": featurized["seconds"],
                                  "publish_features": published["seconds"], "pca": pca_run["seconds"]},
            }

        pca_inputs >> pca
        return publish_pca(batch, staged, featurize.output, published, pca.output)

    return local_spark(batch)
