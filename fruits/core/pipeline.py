"""What the DAG's backend-independent tasks do: sense, plan, validate, commit, report.

The DAG file only wires these together; keeping the logic here makes it testable without a
scheduler and keeps the DAG file cheap to parse.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime

from fruits import layout
from fruits.contract import FEATURE_DIM, Batch, ComputeResult, PcaOutputs
from fruits.core import contents, ledger, pca_policy, planning, report, validation
from fruits.core.validation import Findings, ValidationError, check_batch
from fruits.storage import Bucket

log = logging.getLogger(__name__)


def seconds_waited(dag_run_start: datetime | None) -> float:
    if dag_run_start is None:
        return 0.0
    return (datetime.now(UTC) - dag_run_start).total_seconds()


def count_new_images(bucket: Bucket, landing_prefix: str) -> int:
    return planning.count_new(bucket, landing_prefix)


def plan(bucket: Bucket, landing_prefix: str) -> Batch:
    started = time.perf_counter()
    batch = planning.plan_batch(bucket, landing_prefix)
    batch = dataclasses.replace(batch, seconds=round(time.perf_counter() - started, 2))
    log.info(
        "batch %s: %d new image(s), %d rejected at planning, %d re-landing(s); %d committed batch(es) "
        "with %d features rows so far",
        batch.batch_id,
        batch.images,
        batch.planning_rejects,
        batch.relandings,
        len(batch.committed_batches),
        batch.committed_features_rows,
    )
    return batch


def _scan(bucket: Bucket, prefix: str, **checks):
    try:
        return validation.scan(bucket, prefix, **checks)
    except FileNotFoundError as exc:
        raise ValidationError(f"validation failed: {exc}") from None


def validate(bucket: Bucket, batch: Batch, pca_prefix: str, features_dim: int = FEATURE_DIM) -> dict:
    """Raise ValidationError naming every mismatch; otherwise return the counts for the report and
    `pca_state`, the PCA state the commit records (the next run merges with it).

    Streamed (`fruits.core.validation`): memory is bounded by this batch, not by the history.
    """
    started = time.perf_counter()
    findings = Findings()
    manifest_uris = [bucket.uri(k) for k in planning.manifest_keys(bucket, batch.batch_id)]
    features = _scan(bucket, layout.features_prefix(batch.batch_id), vector_column="features", dim=features_dim)
    rejects = _scan(bucket, layout.rejects_prefix(batch.batch_id), vector_column=None, reason_column="reason")
    check_batch(manifest_uris, features.paths, rejects.paths, findings)
    features.vectors.report("features", findings)

    outputs = PcaOutputs(bucket.uri(pca_prefix))
    pca_report = bucket.read_json(bucket.key_of(outputs.report))
    if pca_report is None:
        raise ValidationError(f"validation failed: no PCA report at {outputs.report}")
    previous = getattr(batch, "pca_state", None)
    pca = validation.check_pca(
        bucket,
        outputs,
        pca_report,
        batch_id=batch.batch_id,
        committed_rows=batch.committed_features_rows,
        featured=features.paths,
        previous=previous,
        findings=findings,
    )
    findings.raise_if_any()
    refit = pca_report.get("refit") or {}
    result = {
        "features_rows": features.rows,
        "rejects_rows": rejects.rows,
        "features_total": batch.committed_features_rows + features.rows,
        "pca_rows": pca.rows,
        "features_dim": features_dim,
        "pca_k": int(pca_report["k"]),
        "explained_variance_total": float(pca_report.get("explained_variance_total", 0.0)),
        "pca_mode": pca_report.get("mode", "refit"),
        "pca_refit_reason": refit.get("reason"),
        "pca_max_angle_degrees": refit.get("max_angle_degrees"),
        "pca_space_id": pca_report.get("space_id"),
        "pca_rows_validated": pca.rows_read,
        "reject_reasons": dict(rejects.reasons),
        "pca_state": pca_policy.state_of(bucket.name, pca_prefix, pca_report),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("validation passed: %s", {k: v for k, v in result.items() if k not in ("reject_reasons", "pca_state")})
    return result


def commit(bucket: Bucket, batch: Batch, validation: dict, run_id: str) -> dict:
    """Add the batch to the ledger (one conditional write), then let its images leave the landing
    prefix. A crash between the two is finished by the next run's planning."""
    duplicates = contents.count_duplicates(bucket, batch.batch_id, planning.parallel)
    state = ledger.load(bucket)
    record = ledger.batch_record(
        batch_id=batch.batch_id,
        run_id=run_id,
        images=batch.images,
        features_rows=validation["features_rows"],
        rejects_rows=validation["rejects_rows"],
        planning_rejects=batch.planning_rejects,
        relandings=batch.relandings,
    )
    if ledger.add_batch(state, record, planned_after=batch.committed_batches, pca=validation.get("pca_state")):
        ledger.save(bucket, state)
        log.info(
            "committed batch %s (%d images); the ledger holds %d batch(es)",
            batch.batch_id,
            batch.images,
            len(state.batches),
        )
    else:
        log.info("batch %s was already committed (a retried task)", batch.batch_id)
    cleared = planning.clear_landing(bucket, batch.batch_id)
    planning.mark_cleared(bucket, batch.batch_id)
    log.info("batch %s: %d object(s) left the landing prefix", batch.batch_id, cleared["cleared"])
    return {"batches": len(state.batches), **cleared, "duplicate_contents": duplicates}


def publish_report(
    bucket: Bucket,
    *,
    run_id: str,
    batch: Batch,
    computed: ComputeResult,
    validation: dict,
    compute: str,
    params: dict,
    committed: dict | None = None,
) -> dict:
    """Write `reports/<run_id>.json` and log its table."""
    stage_seconds = {"plan_batch": batch.seconds, **computed.stage_seconds, "validate": validation["seconds"]}
    outputs = {**computed.outputs, "report": bucket.uri(layout.report_key(run_id))}
    run_report = report.build(
        run_id=run_id,
        batch=batch,
        validation=validation,
        outputs=outputs,
        stage_seconds=stage_seconds,
        compute=compute,
        params=params,
        committed=committed or {},
    )
    bucket.write_json(layout.report_key(run_id), run_report)
    log.info("run report %s\n%s", outputs["report"], report.render(run_report))
    return run_report


def publish_failure(
    bucket: Bucket, *, run_id: str, failed_task: str | None, error: str, reason: str, keep_existing: bool = False
) -> dict:
    """Write `reports/<run_id>.json` for a failed or timed-out run.

    Never over a success report; with `keep_existing` (the run-level callback, which knows less
    than the failed task's own) not over a failure report either.
    """
    key = layout.report_key(run_id)
    existing = bucket.read_json(key)
    if existing and (existing.get("status") == "success" or keep_existing):
        return existing
    committed = [b["batch_id"] for b in ledger.load(bucket).batches if b.get("run_id") == run_id]
    run_report = report.build_failed(
        run_id=run_id,
        failed_task=failed_task,
        error=error,
        reason=reason,
        committed_batch=committed[0] if committed else None,
    )
    bucket.write_json(key, run_report)
    log.error("run report %s\n%s", bucket.uri(key), report.render(run_report))
    return run_report
