"""fruits.core.classification: which PCA run the classifier trains on, and the re-check of what
classify.py left in S3, on moto through a real S3Hook."""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits import layout
from fruits.contract import PcaRun
from fruits.core import classification, ledger
from fruits.core.classification import ClassifierError

RUN_1 = "scheduled__2026-11-29T10:00:00+00:00"
RUN_2 = "manual__2026-11-30T10:00:00+00:00"


def commit_run(bucket, run_id: str, batch_id: str, k: int = 4, rows: int = 10) -> None:
    state = ledger.load(bucket)
    ledger.add_batch(
        state,
        ledger.batch_record(
            batch_id=batch_id, run_id=run_id, images=rows, features_rows=rows, rejects_rows=0, planning_rejects=0
        ),
        planned_after=state.batch_ids(),
        pca=None,
    )
    ledger.save(bucket, state)
    bucket.write_json(layout.pca_prefix(run_id) + "report.json", {"k": k, "rows": rows})


def test_the_param_wins_then_the_event_then_the_latest_commit(bucket):
    commit_run(bucket, RUN_1, "b1", k=3)
    commit_run(bucket, RUN_2, "b2", k=5, rows=20)
    latest = classification.resolve_pca_run(bucket, "", [])
    assert (latest.run_id, latest.source, latest.k, latest.rows, latest.batch_id) == (
        RUN_2,
        "latest committed",
        5,
        20,
        "b2",
    )
    assert latest.vectors_key() == "pca/run=manual__2026-11-30T10_00_00_00_00/vectors/"
    events = [{"bucket": bucket.name, "run_id": RUN_1}, {"bucket": "elsewhere", "run_id": RUN_2}]
    from_event = classification.resolve_pca_run(bucket, None, events)
    assert (from_event.run_id, from_event.source) == (RUN_1, "asset event")  # the other bucket's event is not ours
    by_hand = classification.resolve_pca_run(bucket, f"  {RUN_1} ", events[1:])
    assert (by_hand.run_id, by_hand.source) == (RUN_1, "param")


def test_the_bucket_comes_from_the_event_unless_a_run_is_named():
    events = [{"bucket": "old", "run_id": "r0"}, {"bucket": "new", "run_id": "r1"}]
    assert classification.pick_bucket("param-bucket", "", events) == "new"
    assert classification.pick_bucket("param-bucket", "r5", events) == "param-bucket"
    assert classification.pick_bucket("param-bucket", "", []) == "param-bucket"


def test_only_committed_runs_with_a_pca_report_qualify(bucket):
    with pytest.raises(ClassifierError, match="no committed pipeline run .* run fruits_pipeline first"):
        classification.resolve_pca_run(bucket, "", [])
    commit_run(bucket, RUN_1, "b1")
    with pytest.raises(ClassifierError, match=r"PCA run 'manual__x' is not a committed pipeline run \(latest: "):
        classification.resolve_pca_run(bucket, "manual__x", [])
    bucket.delete_prefix(layout.pca_prefix(RUN_1))
    with pytest.raises(ClassifierError, match="no PCA report at s3://fruits-unit/pca/run=scheduled__"):
        classification.resolve_pca_run(bucket, RUN_1, [])


def write_classifier_outputs(bucket, run_id: str, metrics: dict, predictions: list[str]) -> None:
    outputs = layout.classifier_outputs(bucket.name, run_id)
    bucket.write_json(bucket.key_of(outputs.metrics), metrics)
    sink = io.BytesIO()
    pq.write_table(pa.table({"path": predictions}), sink)
    bucket.write_bytes(bucket.key_of(outputs.predictions) + "/part-0.parquet", sink.getvalue())
    bucket.write_text(bucket.key_of(outputs.model) + "/metadata/part-00000", "{}")


def metrics_of(**changes) -> dict:
    metrics = {
        "pca_run": RUN_1,
        "labels": ["Apple", "Kiwi"],
        "confusion_matrix": [[2, 0], [1, 1]],
        "test_rows": 4,
        "train_rows": 16,
        "accuracy": 0.75,
        "macro_f1": 0.73,
        "majority_baseline": 0.5,
        "warnings": [],
    }
    return {**metrics, **changes}


def pca_run() -> PcaRun:
    return PcaRun(
        bucket="fruits-unit",
        run_id=RUN_1,
        pca_prefix=layout.pca_prefix(RUN_1),
        k=4,
        rows=20,
        batch_id="b1",
        source="param",
    )


def test_consistent_outputs_pass_and_summarise(bucket):
    write_classifier_outputs(bucket, "c1", metrics_of(), ["s3://f/a", "s3://f/b", "s3://f/c", "s3://f/d"])
    outputs = layout.classifier_outputs(bucket.name, "c1")
    metrics = classification.validate_metrics(bucket, outputs, pca_run())
    result = classification.summary(metrics, outputs)
    assert result["accuracy"] == 0.75 and result["majority_baseline"] == 0.5 and result["labels"] == 2
    assert result["outputs"]["confusion_matrix"] == "s3://fruits-unit/classifier/run=c1/confusion_matrix.png"
    table = classification.render(result)
    assert re.search(r"^accuracy +0\.750$", table, re.M) and re.search(r"^majority baseline +0\.500$", table, re.M)


def test_outputs_that_do_not_add_up_are_refused_with_every_reason(bucket):
    bad = metrics_of(confusion_matrix=[[2, 0], [1, 2]], accuracy=1.5, pca_run="another run")
    write_classifier_outputs(bucket, "c2", bad, ["s3://f/a", "s3://f/a", "s3://f/c"])
    with pytest.raises(ClassifierError) as refused:
        classification.validate_metrics(bucket, layout.classifier_outputs(bucket.name, "c2"), pca_run())
    message = str(refused.value)
    assert "the confusion matrix sums to 5, not the 4 test rows" in message
    assert "accuracy = 1.5 is not in [0, 1]" in message
    assert "3 predictions (2 distinct) for 4 test rows" in message
    assert "metrics are of PCA run 'another run'" in message
