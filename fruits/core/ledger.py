"""The ledger of committed batches (`state/ledger.json`): the pipeline's only durable state.

A batch is committed after its run validated; until then its outputs may exist but nobody
counts them, and the next run plans the same images again. One JSON object written with a
single PUT, so a commit is atomic; the DAG allows one active run, so there is one writer.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fruits import layout, storage

EMPTY = {"version": 1, "batches": []}


def read(hook, bucket: str) -> dict:
    return storage.read_json(hook, bucket, layout.LEDGER_KEY, default=None) or {**EMPTY, "batches": []}


def committed_keys(ledger: dict) -> set[str]:
    return {key for batch in ledger["batches"] for key in batch["keys"]}


def committed_batch_ids(ledger: dict) -> list[str]:
    return [batch["batch_id"] for batch in ledger["batches"]]


def commit(hook, bucket: str, *, batch_id: str, keys: list[str], run_id: str, features_rows: int,
           rejects_rows: int) -> dict:
    """Add the batch to the ledger (idempotent: committing the same batch twice is a no-op)."""
    ledger = read(hook, bucket)
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
    storage.write_json(hook, bucket, layout.LEDGER_KEY, ledger)
    return ledger
