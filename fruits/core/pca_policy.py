"""Incremental PCA on the orchestration side: the state a commit records.

The ledger keeps one opaque "current PCA state" (`state_of`): where the committed run's
moments, basis, contents index and vectors list are, its space and k. The next run hands the
previous run's folder to pca.py (`--previous`), which scans only the new batch, decides by
itself whether to refit (`--refit auto`), and reads the committed features only when it does.
"""

from __future__ import annotations

import logging

from fruits import layout
from fruits.contract import PcaOutputs
from fruits_spark import interface

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_REFIT_ANGLE = interface.PCA_REFIT_ANGLE  # degrees: pca.py's own default, the Param's too


def state_of(bucket_name: str, pca_prefix: str, report: dict) -> dict:
    """The current PCA state after a committed run (what the ledger stores, JSON-serialisable)."""
    outputs = PcaOutputs(layout.s3_uri(bucket_name, pca_prefix))
    refit = report.get("refit") or {}
    return {
        "version": STATE_VERSION,
        "pca_prefix": pca_prefix,
        "space_id": report.get("space_id"),
        "mode": report.get("mode", "refit"),
        "k": int(report["k"]),
        "input_dim": int(report.get("input_dim", 0)),
        "rows": int(report["rows"]),
        "fitted_rows": int(report.get("fitted_rows", report["rows"])),
        "max_angle_degrees": refit.get("max_angle_degrees"),
        **outputs.state_files(),
        "model": outputs.model,
    }


def previous_prefix(state: dict | None) -> str | None:
    """The PCA folder (key prefix) the next run merges with; None: fit from scratch.

    A state from before incremental PCA (no moments) cannot be merged with: from scratch.
    """
    if not state or state.get("version") != STATE_VERSION or not state.get("pca_prefix"):
        return None
    return state["pca_prefix"]
