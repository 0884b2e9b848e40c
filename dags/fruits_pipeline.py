"""fruits_pipeline: new fruit photos in S3 -> MobileNetV2 features -> PCA, validated and committed.

    wait_for_new_images -> plan_batch -> [compute backend] -> validate -> commit_batch -> publish_report

* The landing prefix holds only what no committed batch has finished with: committed images
  leave it. The sensor runs in reschedule mode (no worker slot while waiting), or the run is
  started by S3 events through SQS (FRUITS_TRIGGER=sqs); with nothing new within
  `sensor_timeout` seconds the run ends skipped.
* `plan_batch` plans, ignores or rejects every key with a reason, claims the new images by a
  conditional copy to safe names and writes the batch's manifest.jsonl; featurize reads exactly it.
* The compute backend is chosen at parse time by FRUITS_COMPUTE: `local` (Spark local mode
  on files staged from S3) or `emr` (a transient EMR cluster, created and always terminated).
* PCA is incremental: the new batch is projected into the committed space unless a refit is due.
* The batch is committed only after validation (a conditional write of state/ledger.json);
  a failed run leaves it for the next run and writes a failed report.

This file only wires tasks; what they do lives in the `fruits` package (fruits.core, fruits.backends).
Parse-time cost is kept low: no TensorFlow, PySpark or network calls at import.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import PokeReturnValue, dag, task

from fruits import assets, backends, errors, events, params, settings

SETTINGS = settings.load()
BACKEND = backends.load(SETTINGS.compute)


def _report_task_failure(context) -> None:
    """A task failed for good (no retry left): the run's report says which, and why."""
    from fruits.core import pipeline

    ti = context["ti"]
    pipeline.publish_failure(
        _bucket(context["params"]["bucket"]),
        run_id=context["run_id"],
        failed_task=ti.task_id,
        error=str(context.get("exception") or "unknown error"),
        reason="task failed",
    )


def _report_run_failure(context) -> None:
    """The run failed or timed out (dagrun_timeout ends running tasks without their own callback)."""
    from fruits.core import pipeline

    params = context.get("params") or {}
    ti = context.get("ti")
    pipeline.publish_failure(
        _bucket(params.get("bucket") or SETTINGS.bucket),
        run_id=context["run_id"],
        failed_task=getattr(ti, "task_id", None),
        error=str(context.get("reason") or ""),
        reason=str(context.get("reason") or "run failed"),
        keep_existing="timed_out" not in str(context.get("reason") or ""),
    )


def _check_params(values: dict) -> None:
    """The run's Params, checked in code beyond their JSON schema (fruits.params.check_run_params)."""
    params.check_run_params(values, SETTINGS, BACKEND)


DEFAULT_ARGS = {
    "on_failure_callback": _report_task_failure,
    "owner": "fruits",
    "retries": SETTINGS.task_retries,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    # A fruits.errors.PermanentError (bad Params, a ledger off its schema, failed validation ...) fails
    # the task at once; any other error is retried.
    "retry_policy": errors.retry_policy(),
    "execution_timeout": timedelta(minutes=30),
}


def _bucket(name: str):
    from fruits.storage import Bucket

    return Bucket.connect(SETTINGS.aws_conn_id, name)


@dag(
    dag_id="fruits_pipeline",
    schedule=events.schedule(SETTINGS),  # FRUITS_TRIGGER: the poll schedule, or the SQS-watched landing Asset
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # the ledger has one writer
    params=params.for_dag(SETTINGS, BACKEND),
    default_args=DEFAULT_ARGS,
    on_failure_callback=_report_run_failure,
    dagrun_timeout=timedelta(seconds=SETTINGS.run_timeout),  # FRUITS_RUN_TIMEOUT; fits the EMR teardown
    tags=["fruits", "spark", SETTINGS.compute],
    doc_md=__doc__,
)
def fruits_pipeline():
    @task.sensor(poke_interval=SETTINGS.sensor_poke_interval, timeout=86400, mode="reschedule", retries=0)
    def wait_for_new_images(params: dict | None = None, dag_run=None) -> PokeReturnValue:
        from airflow.sdk.exceptions import AirflowSkipException

        from fruits.core import pipeline

        _check_params(params)
        new = pipeline.count_new_images(_bucket(params["bucket"]), params["landing_prefix"])
        if new:
            return PokeReturnValue(is_done=True, xcom_value=new)
        waited = pipeline.seconds_waited(dag_run.start_date)
        if waited >= params["sensor_timeout"]:
            raise AirflowSkipException(
                f"no new images under s3://{params['bucket']}/{params['landing_prefix']} "
                f"after {waited:.0f}s (sensor_timeout {params['sensor_timeout']}s)"
            )
        return PokeReturnValue(is_done=False)

    @task
    def plan_batch(params: dict | None = None) -> dict:
        from fruits.core import pipeline

        _check_params(params)
        return pipeline.plan(_bucket(params["bucket"]), params["landing_prefix"]).to_xcom()

    @task(retries=0)
    def validate(batch: dict, computed: dict) -> dict:
        from fruits.contract import Batch, ComputeResult
        from fruits.core import pipeline

        planned = Batch.from_xcom(batch)
        return pipeline.validate(_bucket(planned.bucket), planned, ComputeResult.from_xcom(computed).pca_prefix)

    @task
    def commit_batch(batch: dict, validation: dict, run_id: str | None = None) -> dict:
        from fruits.contract import Batch
        from fruits.core import pipeline

        planned = Batch.from_xcom(batch)
        return pipeline.commit(_bucket(planned.bucket), planned, validation, run_id)

    # Downstream DAGs (fruits_classifier) schedule on these Assets; each event says where this
    # run's outputs are (the bucket is a Param, so no Asset URI could).
    @task(outlets=[assets.FEATURES, assets.PCA_VECTORS])
    def publish_report(
        batch: dict,
        computed: dict,
        validation: dict,
        committed: dict,
        params: dict | None = None,
        run_id: str | None = None,
        outlet_events=None,
    ) -> dict:
        from fruits.contract import Batch, ComputeResult
        from fruits.core import pipeline

        planned, result = Batch.from_xcom(batch), ComputeResult.from_xcom(computed)
        extra = assets.pca_event_extra(
            bucket=planned.bucket,
            run_id=run_id,
            pca_prefix=result.pca_prefix,
            k=validation["pca_k"],
            rows=validation["pca_rows"],
            batch_id=planned.batch_id,
            pca_mode=validation.get("pca_mode"),
            space_id=validation.get("pca_space_id"),
        )
        outlet_events[assets.PCA_VECTORS].extra = extra
        outlet_events[assets.FEATURES].extra = {**extra, "features": result.outputs["features"]}
        return pipeline.publish_report(
            _bucket(planned.bucket),
            run_id=run_id,
            batch=planned,
            computed=result,
            validation=validation,
            compute=SETTINGS.compute,
            params=params,
            committed=committed,
        )

    sensed = wait_for_new_images()
    batch = plan_batch()
    sensed >> batch
    computed = BACKEND.build(batch, SETTINGS)
    validation = validate(batch, computed)
    committed = commit_batch(batch, validation)
    publish_report(batch, computed, validation, committed)


pipeline_dag = fruits_pipeline()
