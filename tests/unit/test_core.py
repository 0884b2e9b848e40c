"""fruits.core without a scheduler or Spark: planning, the ledger, validation, commit and the run
report, on moto's S3 through a real S3Hook, with outputs shaped like the jobs' own."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits import layout, plan
from fruits.contract import FEATURE_DIM, Batch, ComputeResult
from fruits.core import ledger, pipeline, planning, report
from fruits.core.validation import ValidationError
from fruits.storage import Bucket

LANDED = [
    "landing/Apple Red 1/r_1_100.jpg",
    "landing/Banana/r_2_100.JPG",
    "landing/Banana/r_3_100.png",
    "landing/Banana/notes.txt",
    "landing/Kiwi/.DS_Store",
]
IMAGES = [k for k in LANDED if k.lower().endswith((".jpg", ".jpeg", ".png"))]


def land(bucket: Bucket, keys=LANDED) -> None:
    for key in keys:
        bucket.write_bytes(key, b"not decoded here")


def parquet(bucket: Bucket, prefix: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    bucket.write_bytes(prefix + "part-00000.parquet", sink.getvalue())


def write_job_outputs(
    bucket: Bucket,
    batch: Batch,
    run_id: str,
    *,
    rejected: int = 1,
    dim: int = FEATURE_DIM,
    k: int = 2,
    pca_rows: int | None = None,
) -> str:
    """What featurize.py and pca.py leave for a batch: features + rejects, PCA vectors + report."""
    uris = [bucket.uri(key) for key in planning.manifest_keys(bucket, batch.batch_id)]
    featured, refused = uris[rejected:], uris[:rejected]
    rng = np.random.default_rng(0)
    parquet(
        bucket,
        layout.features_prefix(batch.batch_id),
        pa.table(
            {
                "path": featured,
                "features": [rng.random(dim, dtype=np.float32).tolist() for _ in featured],
                "sha256": [f"{i:064x}" for i in range(len(featured))],
            }
        ),
    )
    parquet(
        bucket,
        layout.rejects_prefix(batch.batch_id),
        pa.table({"path": refused, "reason": ["cannot decode image: truncated"] * len(refused)}),
    )
    rows = len(featured) + batch.committed_features_rows if pca_rows is None else pca_rows
    pca_prefix = layout.pca_prefix(run_id)
    parquet(
        bucket,
        pca_prefix + "vectors/",
        pa.table(
            {
                "path": [f"s3://{bucket.name}/p/{i}.jpg" for i in range(rows)],
                "pca_features": [rng.random(k).tolist() for _ in range(rows)],
            }
        ),
    )
    bucket.write_json(pca_prefix + "report.json", {"rows": rows, "k": k, "explained_variance_total": 0.97})
    return pca_prefix


# ----------------------------------------------------------------------------- planning and ledger


def test_a_batch_holds_the_new_images_and_only_those(bucket):
    land(bucket)
    assert pipeline.count_new_images(bucket, "landing") == len(IMAGES)
    batch = pipeline.plan(bucket, "/landing")
    assert batch.images == len(IMAGES) and batch.committed_batches == [] and batch.bucket == bucket.name
    assert batch.ignored == {"not an image type (.txt)": 1, "not an image type (no extension)": 1}
    assert planning.manifest_keys(bucket, batch.batch_id) == sorted(IMAGES)
    entries = planning.read_entries(bucket, batch.batch_id)
    assert [e.label for e in entries] == ["Apple Red 1", "Banana", "Banana"]
    # the jobs read safe copies; the landing objects stay until the commit
    assert [e.read for e in entries] == [
        bucket.uri(layout.staged_image_key(batch.batch_id, i, ext))
        for i, ext in ((1, ".jpg"), (2, ".jpg"), (3, ".png"))
    ]
    assert all(bucket.read_bytes(bucket.key_of(e.read)) == b"not decoded here" for e in entries)
    assert all(bucket.exists(k) for k in IMAGES)
    assert pipeline.plan(bucket, "landing/").batch_id == batch.batch_id  # content-addressed: a re-plan


def test_nothing_new_is_a_lookup_error(bucket):
    land(bucket, ["landing/Kiwi/readme.md"])
    assert pipeline.count_new_images(bucket, "landing/") == 0
    with pytest.raises(LookupError, match="no new images under s3://fruits-unit/landing/"):
        planning.plan_batch(bucket, "landing/")


def test_committed_images_leave_the_landing_prefix_and_are_not_planned_again(bucket):
    land(bucket)
    first = pipeline.plan(bucket, "landing/")
    pipeline.commit(bucket, first, {"features_rows": 2, "rejects_rows": 1}, "r1")
    assert bucket.list_keys("landing/") == ["landing/Banana/notes.txt", "landing/Kiwi/.DS_Store"]
    land(bucket, ["landing/Kiwi/r_9_100.jpg"])
    second = pipeline.plan(bucket, "landing/")
    assert planning.manifest_keys(bucket, second.batch_id) == ["landing/Kiwi/r_9_100.jpg"]
    assert second.committed_batches == [first.batch_id] and second.committed_features_rows == 2
    assert second.pca_batches() == [first.batch_id, second.batch_id]
    assert plan.pca_inputs_text(second).splitlines() == [
        bucket.uri(layout.features_prefix(first.batch_id)),
        bucket.uri(layout.features_prefix(second.batch_id)),
    ]


def test_a_commit_is_idempotent(bucket):
    land(bucket)
    batch = pipeline.plan(bucket, "landing/")
    pipeline.commit(bucket, batch, {"features_rows": 2, "rejects_rows": 1}, "r1")
    pipeline.commit(bucket, batch, {"features_rows": 2, "rejects_rows": 1}, "r1-retry")
    state = ledger.load(bucket)
    assert state.batch_ids() == [batch.batch_id] and state.batches[0]["run_id"] == "r1"
    assert state.batches[0]["features"] == layout.features_prefix(batch.batch_id)
    assert state.batches[0]["landing_cleared"] is True and "keys" not in state.batches[0]


# ----------------------------------------------------------------------------- validation


def test_validation_counts_what_the_jobs_wrote(bucket):
    land(bucket)
    batch = pipeline.plan(bucket, "landing/")
    pca_prefix = write_job_outputs(bucket, batch, "run-1")
    result = pipeline.validate(bucket, batch, pca_prefix)
    assert (result["features_rows"], result["rejects_rows"], result["pca_rows"]) == (2, 1, 2)
    assert result["features_total"] == 2 and result["pca_k"] == 2 and result["features_dim"] == FEATURE_DIM
    assert result["reject_reasons"] == {"cannot decode image": 1}


def test_validation_names_every_mismatch(bucket):
    land(bucket)
    batch = pipeline.plan(bucket, "landing/")
    pca_prefix = write_job_outputs(bucket, batch, "run-1", dim=7, pca_rows=5)
    with pytest.raises(ValidationError) as failed:
        pipeline.validate(bucket, batch, pca_prefix)
    message = str(failed.value)
    assert "2 of 2 vectors do not have 1280 values (found lengths [7])" in message
    assert "PCA rows (5) != committed features rows + this batch (2) (difference +3)" in message


def test_validation_fails_clearly_when_an_output_is_missing(bucket):
    land(bucket)
    batch = pipeline.plan(bucket, "landing/")
    with pytest.raises(ValidationError, match="no parquet files under s3://fruits-unit/features/batch="):
        pipeline.validate(bucket, batch, layout.pca_prefix("run-1"))
    pca_prefix = write_job_outputs(bucket, batch, "run-1")
    bucket.delete_prefix(pca_prefix + "report.json")
    with pytest.raises(ValidationError, match=r"no PCA report at s3://fruits-unit/pca/run=run-1/report.json"):
        pipeline.validate(bucket, batch, pca_prefix)


# ----------------------------------------------------------------------------- commit and report


def test_commit_then_report(bucket):
    land(bucket)
    batch = pipeline.plan(bucket, "landing/")
    pca_prefix = write_job_outputs(bucket, batch, "manual__2026-11-30T10:00:00+00:00")
    validation = pipeline.validate(bucket, batch, pca_prefix)
    committed = pipeline.commit(bucket, batch, validation, "manual__2026-11-30T10:00:00+00:00")
    assert committed == {
        "batches": 1,
        "cleared": 3,
        "changed_since_planning": 0,
        "duplicate_contents": {"within_batch": 0, "of_earlier_batches": 0},
    }
    assert pipeline.count_new_images(bucket, "landing/") == 0
    computed = ComputeResult(
        pca_prefix=pca_prefix,
        outputs={"pca": bucket.uri(pca_prefix)},
        stage_seconds={"featurize": 3.25, "pca": 1.5, "emr_startup": None},
    )
    written = pipeline.publish_report(
        bucket,
        run_id="manual__2026-11-30T10:00:00+00:00",
        batch=batch,
        computed=computed,
        validation=validation,
        compute="local",
        params={"weights": "none", "image_size": 32},
    )
    key = "reports/manual__2026-11-30T10_00_00_00_00.json"
    assert bucket.read_json(key) == written
    assert written["status"] == "success" and written["images_sensed"] == 3 and written["features_rows"] == 2
    assert written["outputs"]["report"] == bucket.uri(key)
    seconds = written["stage_seconds"]
    assert "emr_startup" not in seconds and seconds["featurize"] == 3.25
    assert seconds["total"] == pytest.approx(sum(v for k, v in seconds.items() if k != "total"), abs=0.02)
    table = report.render(written)
    assert "| featurized" in table and "rejected: cannot decode image" in table and "97.0%" in table


def test_a_failed_run_gets_a_report_that_says_what_failed_and_what_was_committed(bucket):
    written = pipeline.publish_failure(
        bucket,
        run_id="manual__x",
        failed_task="local_spark.featurize",
        error="Spark job featurize.py failed: exit 2\nTraceback ...",
        reason="task failed",
    )
    assert bucket.read_json("reports/manual__x.json") == written
    assert written["status"] == "failed" and written["failed_task"] == "local_spark.featurize"
    assert written["error"] == "Spark job featurize.py failed: exit 2" and written["committed"] is None
    # the run-level callback, which knows less, keeps the task's report; a timeout replaces it
    kept = pipeline.publish_failure(
        bucket, run_id="manual__x", failed_task=None, error="", reason="task_failure", keep_existing=True
    )
    assert kept == written
    timed_out = pipeline.publish_failure(
        bucket, run_id="manual__x", failed_task=None, error="timed_out", reason="timed_out"
    )
    assert timed_out["reason"] == "timed_out"
    assert "| status" in report.render(timed_out) and "failed" in report.render(timed_out)


def test_a_failure_after_the_commit_reports_the_committed_batch_and_never_hides_a_success(bucket):
    land(bucket)
    batch = pipeline.plan(bucket, "landing/")
    pipeline.commit(bucket, batch, {"features_rows": 2, "rejects_rows": 1}, "run-1")
    failed = pipeline.publish_failure(
        bucket, run_id="run-1", failed_task="publish_report", error="boom", reason="task failed"
    )
    assert failed["committed"] == batch.batch_id
    bucket.write_json("reports/run-2.json", {"status": "success"})
    assert pipeline.publish_failure(
        bucket, run_id="run-2", failed_task="x", error="late callback", reason="task failed"
    ) == {"status": "success"}
