"""What the classifier DAG's backend-independent tasks do: choose the PCA run to train on, check
classify.py's outputs, and say how good the classifier is.

The PCA run is, in this order: the one named by the `pca_run_id` Param; else the one the
triggering Asset event names (the pipeline attaches bucket, run id and PCA prefix to it);
else the latest committed one in the ledger. Only committed runs qualify: their vectors passed
the pipeline's validation.
"""

from __future__ import annotations

import logging
import math

from fruits import layout
from fruits.contract import ClassifierOutputs, PcaOutputs, PcaRun
from fruits.core import ledger
from fruits.errors import PermanentError
from fruits.storage import Bucket

log = logging.getLogger(__name__)


class ClassifierError(PermanentError):
    """A PCA run that cannot be trained on, or classifier outputs that do not add up."""


def committed_runs(state: dict) -> list[dict]:
    """The ledger's batches, oldest first; each was committed by one pipeline run."""
    return list(state["batches"])


def _pca_run(bucket: Bucket, state: dict, run_id: str, source: str) -> PcaRun:
    batches = {b["run_id"]: b for b in committed_runs(state)}
    if run_id not in batches:
        known = ", ".join(list(batches)[-3:]) or "none yet"
        raise ClassifierError(f"PCA run {run_id!r} is not a committed pipeline run (latest: {known})")
    prefix = layout.pca_prefix(run_id)
    report = bucket.read_json(prefix + "report.json")
    if report is None:
        raise ClassifierError(f"no PCA report at {bucket.uri(prefix + 'report.json')}")
    # Incremental PCA: the run's vectors are the datasets of its list (every committed batch of
    # its space, some written by earlier runs); a run from before has one vectors folder.
    listing = PcaOutputs(prefix).vectors_list
    return PcaRun(
        bucket=bucket.name,
        run_id=run_id,
        pca_prefix=prefix,
        k=int(report["k"]),
        rows=int(report["rows"]),
        batch_id=batches[run_id]["batch_id"],
        source=source,
        vectors_list=listing if "vectors_list" in report and bucket.exists(listing) else None,
    )


def pick_bucket(default: str, requested: str | None, events: list[dict]) -> str:
    """The Param's bucket for a run named by hand (or with no event), else the newest event's."""
    if (requested or "").strip() or not events:
        return default
    return events[-1].get("bucket") or default


def event_run_id(events: list[dict], bucket: str) -> str | None:
    """The run id of the newest PCA Asset event for this bucket (events carry it in `extra`)."""
    for extra in reversed(events):
        if extra.get("bucket") == bucket and extra.get("run_id"):
            return extra["run_id"]
    return None


def resolve_pca_run(bucket: Bucket, requested: str | None, events: list[dict]) -> PcaRun:
    state = ledger.read(bucket)
    requested = (requested or "").strip()
    if requested:
        return _pca_run(bucket, state, requested, "param")
    from_event = event_run_id(events, bucket.name)
    if from_event:
        return _pca_run(bucket, state, from_event, "asset event")
    runs = committed_runs(state)
    if not runs:
        raise ClassifierError(
            f"no committed pipeline run in {bucket.uri(layout.LEDGER_KEY)}: run fruits_pipeline first"
        )
    return _pca_run(bucket, state, runs[-1]["run_id"], "latest committed")


def validate_metrics(bucket: Bucket, outputs: ClassifierOutputs, pca_run: PcaRun) -> dict:
    """The job checks itself; this re-checks what it left in S3 before anyone reads it."""
    metrics = bucket.read_json(bucket.key_of(outputs.metrics))
    if metrics is None:
        raise ClassifierError(f"no metrics at {outputs.metrics}")
    problems = []
    labels, matrix = metrics["labels"], metrics["confusion_matrix"]
    if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
        problems.append(f"the confusion matrix is not {len(labels)} x {len(labels)} (one row and column a label)")
    if sum(map(sum, matrix)) != metrics["test_rows"]:
        problems.append(
            f"the confusion matrix sums to {sum(map(sum, matrix))}, not the {metrics['test_rows']} test rows"
        )
    for name in ("accuracy", "macro_f1", "majority_baseline"):
        value = metrics[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
            problems.append(f"{name} = {value!r} is not in [0, 1]")
    predictions = bucket.read_parquet(bucket.key_of(outputs.predictions) + "/", ["path"])
    paths = predictions.column("path").to_pylist()
    if len(paths) != metrics["test_rows"] or len(set(paths)) != len(paths):
        problems.append(f"{len(paths)} predictions ({len(set(paths))} distinct) for {metrics['test_rows']} test rows")
    if metrics.get("pca_run") != pca_run.run_id:
        problems.append(f"metrics are of PCA run {metrics.get('pca_run')!r}, not {pca_run.run_id!r}")
    if not bucket.list_keys(bucket.key_of(outputs.model) + "/"):
        problems.append(f"no model under {outputs.model}/")
    if problems:
        raise ClassifierError("classifier validation failed: " + "; ".join(problems))
    return metrics


def summary(metrics: dict, outputs: ClassifierOutputs) -> dict:
    """What the run report and the demo show of a classifier run."""
    return {
        "pca_run": metrics["pca_run"],
        "labels": len(metrics["labels"]),
        "train_rows": metrics["train_rows"],
        "test_rows": metrics["test_rows"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "majority_baseline": metrics["majority_baseline"],
        "warnings": metrics.get("warnings", []),
        "outputs": outputs.uris(),
    }


def render(result: dict) -> str:
    rows = [
        ("PCA run", result["pca_run"]),
        ("labels", result["labels"]),
        ("train rows", result["train_rows"]),
        ("test rows", result["test_rows"]),
        ("accuracy", f"{result['accuracy']:.3f}"),
        ("majority baseline", f"{result['majority_baseline']:.3f}"),
        ("macro F1", f"{result['macro_f1']:.3f}"),
    ]
    rows += [("warning", w) for w in result["warnings"]]
    rows += [(f"output: {name}", uri) for name, uri in result["outputs"].items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
