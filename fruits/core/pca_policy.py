"""Incremental PCA on the orchestration side: the state a commit records, and the local
backend's refit decision.

The ledger keeps one opaque "current PCA state" (`state_of`): where the committed run's
moments, basis, contents index and vectors list are, its space and k. The next run hands the
previous run's folder to pca.py (`--previous`), which scans only the new batch.

The local backend cannot let pca.py read S3, so it decides before staging (`decide_locally`):
it merges the staged new batch's moments with the previous ones exactly as pca.py does (same
code: `fruits_spark.moments`, `fruits_spark.pca_state`, numpy and pyarrow only), and downloads
the committed features only when that says refit. On EMR pca.py decides by itself (`--refit
auto`) and reads the history from S3 only when it refits.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fruits import layout
from fruits.contract import PcaOutputs
from fruits_spark import interface

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_REFIT_ANGLE = interface.PCA_REFIT_ANGLE  # degrees: pca.py's own default, the Param's too
ARROW_BATCH_ROWS = 2048  # rows per streamed batch of the local decision: bounded memory


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


def new_batch_moments(features_dir: Path, index):
    """(moments, new digests) of the contents of a local features dataset not in `index`,
    streamed in batches of ARROW_BATCH_ROWS rows (a content counts once, rows without a
    sha256 all count): what pca.py's first scan computes for the same batch."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from fruits_spark import pca_state
    from fruits_spark.moments import Moments

    dataset = ds.dataset(str(features_dir), format="parquet")
    has_sha = "sha256" in dataset.schema.names
    columns = ["label", "features"] + (["sha256"] if has_sha else [])
    total, taken = Moments(), set()
    for batch in dataset.to_batches(columns=columns, batch_size=ARROW_BATCH_ROWS):
        if has_sha:
            keys = [None if h is None else h[: 2 * pca_state.DIGEST_BYTES].lower()
                    for h in batch.column("sha256").to_pylist()]
            digests = pca_state.digests(k for k in keys if k)
            fresh = set(pca_state.to_hex(pca_state.novel(digests, index)))
            mask = []
            for key in keys:
                keep = key is None or (key in fresh and key not in taken)
                if key is not None and keep:
                    taken.add(key)
                mask.append(keep)
            batch = batch.filter(pa.array(mask, type=pa.bool_()))
        total = total.merge(Moments.of_batch(batch.column("label"), batch.column("features")))
    return total, pca_state.digests(taken)


def decide_locally(previous_dir: Path, features_dir: Path, *, pca_k: int | None, pca_variance: float | None,
                   refit: str, refit_angle: float):
    """The refit decision pca.py would take on the same inputs (a `pca_state.Decision`), or None
    when the new data cannot be merged (bad vectors: pca.py then fails with its own message)."""
    from fruits_spark import pca_model, pca_state

    previous = pca_state.moments_from_bytes((previous_dir / pca_state.MOMENTS).read_bytes())
    basis = pca_state.basis_from_bytes((previous_dir / pca_state.BASIS).read_bytes())
    index = pca_state.digests_from_bytes((previous_dir / pca_state.CONTENTS).read_bytes())
    new, _ = new_batch_moments(features_dir, index)
    merged = previous.merge(new)
    if not merged.clean or merged.null_vectors or merged.bad_vectors or merged.min_dim != merged.max_dim:
        return None
    ratios, components = pca_model.principal_components(merged.covariance())
    try:
        return pca_state.decide(current=basis, covariance=merged.covariance(), ratios=ratios,
                                components=components, k_requested=pca_k or None,
                                variance_target=None if pca_k else pca_variance, requested=refit,
                                threshold_degrees=refit_angle)
    except pca_state.PolicyError:
        return None  # pca.py refuses the same request with its own one-line error
