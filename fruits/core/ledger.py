"""The ledger of committed batches (`state/ledger.json`): the pipeline's only durable state.

A batch is committed after its run validated; until then its outputs may exist but nobody
counts them, and the next run plans the same images again. One JSON object written with a
single PUT, so a commit is atomic; the DAG allows one active run, so there is one writer.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fruits import layout
from fruits.storage import Bucket


def empty() -> dict:
    return {"version": 1, "batches": []}


def read(bucket: Bucket) -> dict:
    return bucket.read_json(layout.LEDGER_KEY, default=None) or empty()


def committed_keys(ledger: dict) -> set[str]:
    return {key for batch in ledger["batches"] for key in batch["keys"]}


def committed_batch_ids(ledger: dict) -> list[str]:
    return [batch["batch_id"] for batch in ledger["batches"]]


def committed_features_rows(ledger: dict) -> int:
    return sum(batch["features_rows"] for batch in ledger["batches"])


def commit(bucket: Bucket, *, batch_id: str, keys: list[str], run_id: str, features_rows: int,
           rejects_rows: int) -> dict:
    """Add the batch to the ledger (idempotent: committing the same batch twice is a no-op)."""
    ledger = read(bucket)
    if batch_id in committed_batch_ids(ledger):
        return ledger
    overlap = committed_keys(ledger).intersection(keys)
    if overlap:
        raise ValueError(f"{len(overlap)} key(s) of batch {batch_id} are already committed, "
                         f"e.g. {sorted(overlap)[0]}")
    ledger["batches"].append({
        "batch_id": batch_id,
        "run_id": run_id,
        "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": len(keys),
        "features_rows": features_rows,
        "rejects_rows": rejects_rows,
        "features": layout.features_prefix(batch_id),
        "rejects": layout.rejects_prefix(batch_id),
        "keys": sorted(keys),
    })
    bucket.write_json(layout.LEDGER_KEY, ledger)
    return ledger
