"""The pipeline's Airflow Assets, shared by the DAG that produces them and the DAGs that consume them.

Named, not bucket-addressed: the bucket is a per-run Param, so no URI fixed at parse time could
say where a run's vectors are. Each event says it instead, in its `extra` (`pca_event_extra`):
bucket, run id, PCA prefix, k, rows and batch id.
"""

from __future__ import annotations

from airflow.sdk import Asset

FEATURES = Asset(name="fruits_features", uri="fruits://features")
PCA_VECTORS = Asset(name="fruits_pca_vectors", uri="fruits://pca-vectors")


def landing(*watchers) -> Asset:
    """New images under the landing prefix. With FRUITS_TRIGGER=sqs fruits_pipeline is scheduled on
    it, and its watcher (fruits.events) turns the queue's S3 messages into its events; each event's
    extra holds the messages (`fruits.events.landed_keys` reads the keys out of them)."""
    return Asset(name="fruits_landing", uri="fruits://landing", watchers=list(watchers))


def pca_event_extra(
    *,
    bucket: str,
    run_id: str,
    pca_prefix: str,
    k: int,
    rows: int,
    batch_id: str,
    pca_mode: str | None = None,
    space_id: str | None = None,
) -> dict:
    """Where the run's vectors are. With incremental PCA they are the datasets named in
    `<pca_prefix>vectors_list.txt` (every committed batch of the space `space_id`); `pca_mode`
    says whether the run refitted (all vectors new) or projected its batch only."""
    extra = {
        "bucket": bucket,
        "run_id": run_id,
        "pca_prefix": pca_prefix,
        "k": int(k),
        "rows": int(rows),
        "batch_id": batch_id,
    }
    if pca_mode:
        extra.update(pca_mode=pca_mode, space_id=space_id, vectors_list=f"{pca_prefix}vectors_list.txt")
    return extra
