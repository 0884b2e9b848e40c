"""The run report (`reports/<run_id>.json`) and its text rendering for people."""

from __future__ import annotations

from datetime import datetime, timezone

from fruits.contract import Batch

REPORT_FIELDS = (
    "run_id", "batch_id", "images_sensed", "features_rows", "rejects_rows", "features_total",
    "pca_rows", "features_dim", "pca_k", "explained_variance_total", "outputs", "stage_seconds", "status",
)


def build(*, run_id: str, batch: Batch, validation: dict, outputs: dict, stage_seconds: dict,
          compute: str, params: dict) -> dict:
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
        "outputs": outputs,
        "stage_seconds": {k: round(float(v), 2) for k, v in stage_seconds.items() if v is not None},
        "status": "success",
        "compute": compute,
        "weights": params.get("weights"),
        "image_size": params.get("image_size"),
        "reject_reasons": validation.get("reject_reasons", {}),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    report["stage_seconds"]["total"] = round(sum(report["stage_seconds"].values()), 2)
    return report


def render(report: dict) -> str:
    """A plain-text table of a run report, for logs and the terminal."""
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
    for reason, count in sorted(report.get("reject_reasons", {}).items()):
        rows.append((f"  rejected: {reason}", count))
    for stage, seconds in report["stage_seconds"].items():
        rows.append((f"seconds: {stage}", f"{seconds:.1f}"))
    for name, uri in report["outputs"].items():
        rows.append((f"output: {name}", uri))
    width = max(len(str(k)) for k, _ in rows)
    value_width = max(len(str(v)) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    body = [f"| {str(k).ljust(width)} | {str(v).ljust(value_width)} |" for k, v in rows]
    return "\n".join([line, *body, line])
