"""fruits_pipeline: new fruit photos in S3 -> MobileNetV2 features -> PCA, validated and committed.

    wait_for_new_images -> plan_batch -> [compute backend] -> validate -> commit_batch -> publish_report

* "New" images are image keys under the landing prefix that no committed batch holds
  (`state/ledger.json`). The sensor runs in reschedule mode (no worker slot while waiting);
  with nothing new within `sensor_timeout` seconds the run ends skipped.
* `plan_batch` writes the batch's manifest; the featurize job reads exactly that list.
* The compute backend is chosen at parse time by FRUITS_COMPUTE: `local` (Spark local mode
  on files staged from S3) or `emr` (a transient EMR cluster, created and always terminated).
* PCA is fitted on every committed features row plus this batch's, so all images share one space.
* The batch is committed only after validation; a failed run leaves it for the next run.

Parse-time cost is kept low: no TensorFlow, PySpark or network calls at import.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, PokeReturnValue, dag, task

from fruits import settings as fruits_settings

SETTINGS = fruits_settings.load()

PARAMS = {
    "bucket": Param(SETTINGS.bucket, type="string", minLength=3, maxLength=63,
                    description="S3 bucket holding the landing prefix and every output."),
    "landing_prefix": Param(SETTINGS.landing_prefix, type="string",
                            description="Prefix where new images land, e.g. `landing/`."),
    "weights": Param(SETTINGS.weights, type="string", minLength=1,
                     description="`imagenet` (Keras download), `none` (seeded random, offline) "
                                 "or the URI of a Keras `.weights.h5` file."),
    "image_size": Param(SETTINGS.image_size, type="integer", minimum=32, maximum=1024,
                        description="Model input size in pixels (224 for ImageNet weights)."),
    "pca_k": Param(None, type=["null", "integer"], minimum=1,
                   description="Fixed number of PCA components; leave empty to use pca_variance."),
    "pca_variance": Param(SETTINGS.pca_variance, type="number", exclusiveMinimum=0, maximum=1,
                          description="Smallest k reaching this cumulative explained variance."),
    "sensor_timeout": Param(SETTINGS.sensor_timeout, type="integer", minimum=0, maximum=86400,
                            description="Seconds to wait for new images before the run is skipped."),
}
if SETTINGS.compute == "emr":
    from fruits import dag_emr

    PARAMS.update(dag_emr.params(SETTINGS))

# Downstream consumers (the classification engine's DAGs) can schedule on these.
PCA_ASSET = Asset(name="fruits_pca_vectors", uri=f"s3://{SETTINGS.bucket}/pca/")
FEATURES_ASSET = Asset(name="fruits_features", uri=f"s3://{SETTINGS.bucket}/features/")

DEFAULT_ARGS = {
    "owner": "fruits",
    "retries": SETTINGS.task_retries,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(minutes=30),
}


@dag(
    dag_id="fruits_pipeline",
    schedule=SETTINGS.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # the ledger has one writer
    params=PARAMS,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=12),
    tags=["fruits", "spark", SETTINGS.compute],
    doc_md=__doc__,
)
def fruits_pipeline():
    @task.sensor(poke_interval=SETTINGS.sensor_poke_interval, timeout=86400, mode="reschedule",
                 retries=0)
    def wait_for_new_images(params: dict | None = None, dag_run=None) -> PokeReturnValue:
        from airflow.sdk.exceptions import AirflowSkipException

        from fruits import pipeline, storage

        hook = storage.s3_hook(SETTINGS.aws_conn_id)
        new = pipeline.count_new_images(hook, params["bucket"], params["landing_prefix"])
        if new:
            return PokeReturnValue(is_done=True, xcom_value=new)
        waited = pipeline.seconds_waited(dag_run.start_date)
        if waited >= params["sensor_timeout"]:
            raise AirflowSkipException(
                f"no new images under s3://{params['bucket']}/{params['landing_prefix']} "
                f"after {waited:.0f}s (sensor_timeout {params['sensor_timeout']}s)")
        return PokeReturnValue(is_done=False)

    @task
    def plan_batch(params: dict | None = None) -> dict:
        from fruits import pipeline, storage

        return pipeline.plan(storage.s3_hook(SETTINGS.aws_conn_id), params["bucket"], params["landing_prefix"])

    @task(retries=0)
    def validate(batch: dict, computed: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from fruits import pipeline, storage
        from fruits.validation import ValidationError

        try:
            return pipeline.validate(storage.s3_hook(SETTINGS.aws_conn_id), batch["bucket"], batch,
                                     computed["pca_prefix"])
        except ValidationError as exc:
            raise AirflowFailException(str(exc)) from None  # deterministic: retrying cannot help

    @task
    def commit_batch(batch: dict, validation: dict, run_id: str | None = None) -> dict:
        from fruits import pipeline, storage

        return pipeline.commit(storage.s3_hook(SETTINGS.aws_conn_id), batch["bucket"], batch, validation, run_id)

    @task(outlets=[FEATURES_ASSET, PCA_ASSET])
    def publish_report(batch: dict, computed: dict, validation: dict, committed: dict,
                       params: dict | None = None, run_id: str | None = None) -> dict:
        from fruits import layout, report, storage

        stage_seconds = {"plan_batch": batch["seconds"], **computed["stage_seconds"],
                         "validate": validation["seconds"]}
        outputs = {**computed["outputs"], "report": layout.s3_uri(batch["bucket"], layout.report_key(run_id))}
        run_report = report.build(run_id=run_id, batch=batch, validation=validation, outputs=outputs,
                                  stage_seconds=stage_seconds, compute=SETTINGS.compute, params=params)
        storage.write_json(storage.s3_hook(SETTINGS.aws_conn_id), batch["bucket"], layout.report_key(run_id),
                           run_report)
        print(report.render(run_report))
        return run_report

    sensed = wait_for_new_images()
    batch = plan_batch()
    sensed >> batch
    if SETTINGS.compute == "emr":
        from fruits import dag_emr

        computed = dag_emr.build(batch, SETTINGS)
    else:
        from fruits import dag_local

        computed = dag_local.build(batch, SETTINGS)
    validation = validate(batch, computed)
    committed = commit_batch(batch, validation)
    publish_report(batch, computed, validation, committed)


pipeline_dag = fruits_pipeline()
