"""fruits_classifier: a fruit classifier trained and evaluated on the pipeline's PCA vectors.

    choose_pca_run -> [compute backend: classify.py] -> validate_classifier -> publish_classifier

* Scheduled on the `fruits_pca_vectors` Asset: every committed fruits_pipeline run triggers it,
  and the Asset event says which bucket and PCA run. Triggered by hand, the `pca_run_id` Param
  picks a run (empty: the latest committed one).
* classify.py reads the vectors of every committed batch of the run's PCA space (the datasets
  its vectors_list.txt names, docs/pca.md), splits the images by a hash of their path (a path's
  side never changes when images are added), picks the regularisation on a validation share,
  and writes the model, the test predictions, metrics.json and a confusion-matrix plot under
  classifier/run=<run_id>/.
* The compute backend is the pipeline's (FRUITS_COMPUTE): local Spark, or a small EMR cluster of
  the classifier's own, created and always terminated.

This file only wires tasks; what they do lives in fruits.core.classification and fruits.backends.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, task

from fruits import assets, backends, errors, params, settings

SETTINGS = settings.load()
BACKEND = backends.load(SETTINGS.compute)

# Consumers of the classifier (the app's model registry, ...) can schedule on this.
CLASSIFIER_ASSET = Asset(name="fruits_classifier", uri="fruits://classifier")


def _bucket(name: str):
    from fruits.storage import Bucket

    return Bucket.connect(SETTINGS.aws_conn_id, name)


@dag(
    dag_id="fruits_classifier",
    schedule=[assets.PCA_VECTORS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=params.for_classifier(SETTINGS, BACKEND),
    default_args={
        "owner": "fruits",
        "retries": SETTINGS.task_retries,
        "retry_delay": timedelta(minutes=1),
        "retry_policy": errors.retry_policy(),  # a fruits.errors.PermanentError fails at once
        "execution_timeout": timedelta(minutes=30),
    },
    dagrun_timeout=timedelta(seconds=SETTINGS.classifier_run_timeout),  # FRUITS_CLASSIFIER_RUN_TIMEOUT
    tags=["fruits", "spark", "classifier", SETTINGS.compute],
    doc_md=__doc__,
)
def fruits_classifier():
    @task(retries=0)
    def choose_pca_run(params: dict | None = None, triggering_asset_events=None) -> dict:
        from fruits import params as run_params
        from fruits.core import classification

        run_params.check_classifier_params(params)
        events = [dict(event.extra or {}) for event in (triggering_asset_events or {}).get(assets.PCA_VECTORS, [])]
        bucket = classification.pick_bucket(params["bucket"], params["pca_run_id"], events)
        run_params.check_bucket_name(bucket)  # an Asset event's bucket, too
        chosen = classification.resolve_pca_run(_bucket(bucket), params["pca_run_id"], events)
        print(
            f"training on PCA run {chosen.run_id} ({chosen.source}): {chosen.rows} rows, k={chosen.k}, "
            f"vectors: {chosen.vectors_list or chosen.vectors_key()}"
        )
        return chosen.to_xcom()

    @task(retries=0)
    def validate_classifier(pca_run: dict, computed: dict, run_id: str | None = None) -> dict:
        from fruits import layout
        from fruits.contract import PcaRun
        from fruits.core import classification

        chosen = PcaRun.from_xcom(pca_run)
        outputs = layout.classifier_outputs(chosen.bucket, run_id)
        metrics = classification.validate_metrics(_bucket(chosen.bucket), outputs, chosen)
        return classification.summary(metrics, outputs)

    @task(outlets=[CLASSIFIER_ASSET])
    def publish_classifier(result: dict, computed: dict, outlet_events=None) -> dict:
        from fruits.core import classification

        print(classification.render(result))
        outlet_events[CLASSIFIER_ASSET].extra = {
            "pca_run": result["pca_run"],
            "accuracy": result["accuracy"],
            "classifier": result["outputs"]["classifier"],
        }
        return {**result, "stage_seconds": computed["stage_seconds"]}

    chosen = choose_pca_run()
    computed = BACKEND.build_classifier(chosen, SETTINGS)
    publish_classifier(validate_classifier(chosen, computed), computed)


classifier_dag = fruits_classifier()
