"""The run report (`reports/<run_id>.json`) and its text rendering for people."""

from __future__ import annotations

from datetime import UTC, datetime

from fruits.contract import Batch


def build(
    *,
    run_id: str,
    batch: Batch,
    validation: dict,
    outputs: dict,
    stage_seconds: dict,
    compute: str,
    params: dict,
    committed: dict | None = None,
) -> dict:
    report = {
        "run_id": run_id,
        "batch_id": batch.batch_id,
        "images_sensed": batch.images,
        "features_rows": validation["features_rows"],
        "rejects_rows": validation["rejects_rows"],
        "features_total": validation["features_total"],
        "pca_rows": validation["pca_rows"],
        "features_dim": validation["features_dim"],
        "pca_k": validation["pca_k"],
        "explained_variance_total": validation["explained_variance_total"],
        # Incremental PCA: refitted (every vector re-projected) or the new batch projected only, and why.
        "pca_mode": validation.get("pca_mode"),
        "pca_refit_reason": validation.get("pca_refit_reason"),
        "pca_max_angle_degrees": validation.get("pca_max_angle_degrees"),
        "pca_space_id": validation.get("pca_space_id"),
        "outputs": outputs,
        "stage_seconds": {k: round(float(v), 2) for k, v in stage_seconds.items() if v is not None},
        "status": "success",
        "compute": compute,
        "weights": params.get("weights"),
        "image_size": params.get("image_size"),
        "reject_reasons": validation.get("reject_reasons", {}),
        "planning_rejects": batch.planning_rejects,
        "planning_reject_reasons": batch.planning_reject_reasons,
        "ignored": batch.ignored,
        "relandings": batch.relandings,
        "unlabelled": batch.unlabelled,
        "duplicate_contents": (committed or {}).get("duplicate_contents", {}),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report["stage_seconds"]["total"] = round(sum(report["stage_seconds"].values()), 2)
    return report


def build_failed(*, run_id: str, failed_task: str | None, error: str, reason: str, committed_batch: str | None) -> dict:
    """The report of a run that failed or timed out: what failed, why, and what it committed."""
    return {
        "run_id": run_id,
        "status": "failed",
        "reason": reason,
        "failed_task": failed_task,
        "error": first_line(error),
        "committed": committed_batch,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def first_line(error: str, limit: int = 500) -> str:
    line = next((part.strip() for part in str(error).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render(report: dict) -> str:
    """A plain-text table of a run report, for logs and the terminal."""
    if report["status"] != "success":
        return _table([(k, report.get(k)) for k in ("run_id", "status", "reason", "failed_task", "error", "committed")])
    rows = [
        ("run", report["run_id"]),
        ("status", report["status"]),
        ("batch", report["batch_id"]),
        ("new images", report["images_sensed"]),
        ("featurized", report["features_rows"]),
        ("rejected", report["rejects_rows"]),
        ("features in total", report["features_total"]),
        ("features dim", report["features_dim"]),
        ("PCA rows", report["pca_rows"]),
        ("PCA k", report["pca_k"]),
        ("explained variance", f"{report['explained_variance_total']:.1%}"),
    ]
    if report.get("pca_mode"):
        angle = report.get("pca_max_angle_degrees")
        rows.append(("PCA", f"{report['pca_mode']}" + ("" if angle is None else f" (subspace moved {angle:.2f} deg)")))
        rows.append(("  why", report.get("pca_refit_reason")))
    for reason, count in sorted(report.get("reject_reasons", {}).items()):
        rows.append((f"  rejected: {reason}", count))
    rows.append(("rejected at planning", report.get("planning_rejects", 0)))
    for reason, count in sorted(report.get("planning_reject_reasons", {}).items()):
        rows.append((f"  at planning: {reason}", count))
    for reason, count in sorted(report.get("ignored", {}).items()):
        rows.append((f"ignored: {reason}", count))
    rows.append(("re-landings (new content)", report.get("relandings", 0)))
    rows.append(("unlabelled (right under landing)", report.get("unlabelled", 0)))
    for where, count in sorted(report.get("duplicate_contents", {}).items()):
        rows.append((f"duplicate contents ({where.replace('_', ' ')})", count))
    for stage, seconds in report["stage_seconds"].items():
        rows.append((f"seconds: {stage}", f"{seconds:.1f}"))
    for name, uri in report["outputs"].items():
        rows.append((f"output: {name}", uri))
    return _table(rows)


def _table(rows: list[tuple]) -> str:
    width = max(len(str(k)) for k, _ in rows)
    value_width = max(len(str(v)) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    body = [f"| {str(k).ljust(width)} | {str(v).ljust(value_width)} |" for k, v in rows]
    return "\n".join([line, *body, line])
