"""What the DAG's backend-independent tasks do: sense, plan, validate, commit, report.

The DAG file only wires these together; keeping the logic here makes it testable without a
scheduler and keeps the DAG file cheap to parse.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timezone

from fruits import layout, ledger, planning, storage
from fruits.validation import FEATURES_DIM, Findings, ValidationError, check_batch, check_pca

log = logging.getLogger(__name__)


def seconds_waited(dag_run_start: datetime | None) -> float:
    if dag_run_start is None:
        return 0.0
    return (datetime.now(timezone.utc) - dag_run_start).total_seconds()


def count_new_images(hook, bucket: str, landing_prefix: str) -> int:
    return len(planning.new_image_keys(hook, bucket, landing_prefix))


def plan(hook, bucket: str, landing_prefix: str) -> dict:
    started = time.perf_counter()
    batch = planning.plan_batch(hook, bucket, landing_prefix)
    batch["seconds"] = round(time.perf_counter() - started, 2)
    log.info("batch %s: %d new image(s); %d committed batch(es) with %d features rows so far",
             batch["batch_id"], batch["images"], len(batch["committed_batches"]),
             batch["committed_features_rows"])
    return batch


def validate(hook, bucket: str, batch: dict, pca_prefix: str, features_dim: int = FEATURES_DIM) -> dict:
    """Raise ValidationError naming every mismatch; otherwise return the counts for the report."""
    started = time.perf_counter()
    findings = Findings()
    manifest_uris = [layout.s3_uri(bucket, k) for k in planning.manifest_keys(hook, bucket, batch["batch_id"])]
    try:
        features = storage.read_parquet_dataset(hook, bucket, batch["features"], ["path", "features"])
        rejects = storage.read_parquet_dataset(hook, bucket, batch["rejects"], ["path", "reason"])
    except FileNotFoundError as exc:
        raise ValidationError(f"validation failed: {exc}") from None
    check_batch(manifest_uris, features, rejects, findings, features_dim)

    pca_report = storage.read_json(hook, bucket, pca_prefix + "report.json")
    if pca_report is None:
        raise ValidationError(f"validation failed: no PCA report at s3://{bucket}/{pca_prefix}report.json")
    expected_pca_rows = batch["committed_features_rows"] + features.num_rows
    try:
        pca = storage.read_parquet_dataset(hook, bucket, pca_prefix + "vectors/", ["path", "pca_features"])
    except FileNotFoundError as exc:
        raise ValidationError(f"validation failed: {exc}") from None
    check_pca(pca, expected_pca_rows, int(pca_report["k"]), findings)
    findings.check(pca_report["rows"] == pca.num_rows,
                   f"PCA report says {pca_report['rows']} rows, the vectors hold {pca.num_rows}")
    findings.raise_if_any()
    reasons = Counter(_reason_kind(r) for r in rejects.column("reason").to_pylist())
    result = {
        "features_rows": features.num_rows,
        "rejects_rows": rejects.num_rows,
        "features_total": expected_pca_rows,
        "pca_rows": pca.num_rows,
        "features_dim": features_dim,
        "pca_k": int(pca_report["k"]),
        "explained_variance_total": float(pca_report.get("explained_variance_total", 0.0)),
        "reject_reasons": dict(reasons),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("validation passed: %s", {k: v for k, v in result.items() if k != "reject_reasons"})
    return result


def _reason_kind(reason: str) -> str:
    """Group reasons for the report ('cannot decode image: <detail>' -> 'cannot decode image')."""
    return reason.split(":", 1)[0]


def commit(hook, bucket: str, batch: dict, validation: dict, run_id: str) -> dict:
    keys = planning.manifest_keys(hook, bucket, batch["batch_id"])
    state = ledger.commit(hook, bucket, batch_id=batch["batch_id"], keys=keys, run_id=run_id,
                          features_rows=validation["features_rows"], rejects_rows=validation["rejects_rows"])
    log.info("committed batch %s (%d images); the ledger holds %d batch(es)",
             batch["batch_id"], len(keys), len(state["batches"]))
    return {"batches": len(state["batches"])}
