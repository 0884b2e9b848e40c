"""The ledger of committed batches (`state/ledger.json`): the pipeline's only durable state.

Version 2 holds batches, not keys: per batch its counts, where its manifest and outputs are and
whether its images have left the landing prefix yet (`landing_cleared`), plus the current PCA
state. Its size grows with the number of runs (~400 bytes a batch), not with the images.

Every write is conditional on the version that was read (S3 `If-Match`, `If-None-Match` for
the first write): a second writer (a backfill, `dags test`, another deployment) fails loudly
instead of erasing a batch. A ledger that does not match its schema stops the run with a
clear error; it is never silently reset (a reset would reprocess everything).

A version 1 ledger (every committed key in `keys`) is still read; `migrate` rewrites it as
version 2 and keeps every committed batch (planning calls it, under the same conditional write).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from fruits import layout
from fruits.errors import PermanentError
from fruits.storage import Bucket

VERSION = 2
_BATCH_FIELDS = {"batch_id": str, "images": int, "features_rows": int, "rejects_rows": int}


class LedgerError(PermanentError, RuntimeError):
    """The ledger cannot be trusted as it is (schema), or a commit would break an invariant."""


@dataclass
class Ledger:
    data: dict = field(default_factory=lambda: {"version": VERSION, "batches": [], "pca": None})
    etag: str | None = None  # the version read; None: no ledger in the bucket yet

    @property
    def version(self) -> int:
        return self.data["version"]

    @property
    def batches(self) -> list[dict]:
        return self.data["batches"]

    @property
    def pca(self) -> dict | None:
        return self.data.get("pca")

    def batch_ids(self) -> list[str]:
        return [b["batch_id"] for b in self.batches]

    def features_rows(self) -> int:
        return sum(b["features_rows"] for b in self.batches)

    def uncleared(self) -> list[dict]:
        """Committed batches whose images may still be under the landing prefix."""
        return [b for b in self.batches if not b.get("landing_cleared", False)]


def validate_schema(data, where: str = layout.LEDGER_KEY) -> None:
    def fail(problem: str):
        raise LedgerError(
            f"{where} does not match the ledger schema ({problem}); the run stops rather "
            f"than reprocess everything: restore the previous version (S3 versioning) or fix it"
        )

    if not isinstance(data, dict):
        fail(f"expected a JSON object, found {type(data).__name__}")
    if data.get("version") not in (1, VERSION):
        fail(f"unknown version {data.get('version')!r}")
    if not isinstance(data.get("batches"), list):
        fail("'batches' is not a list")
    for i, batch in enumerate(data["batches"]):
        if not isinstance(batch, dict):
            fail(f"batch {i} is not an object")
        for name, kind in _BATCH_FIELDS.items():
            if not isinstance(batch.get(name), kind) or isinstance(batch.get(name), bool):
                fail(f"batch {i} has no valid {name!r}")
        if data["version"] == 1 and not (
            isinstance(batch.get("keys"), list) and all(isinstance(k, str) for k in batch["keys"])
        ):
            fail(f"batch {i} has no valid 'keys' list")
    ids = [b["batch_id"] for b in data["batches"]]
    if len(ids) != len(set(ids)):
        fail("a batch id appears twice")
    if data["version"] == VERSION and not isinstance(data.get("pca"), (dict, type(None))):
        fail("'pca' is neither an object nor null")


def load(bucket: Bucket) -> Ledger:
    data, etag = bucket.read_json_versioned(layout.LEDGER_KEY)
    if etag is None:
        return Ledger()
    validate_schema(data)
    data.setdefault("pca", None)
    return Ledger(data, etag)


def read(bucket: Bucket) -> dict:
    """The ledger as plain data, for readers that do not write it back."""
    return load(bucket).data


def save(bucket: Bucket, ledger: Ledger) -> Ledger:
    """Write conditionally on the version read (raises storage.ConcurrentWriteError if it moved)."""
    validate_schema(ledger.data)
    ledger.etag = bucket.write_json_if(layout.LEDGER_KEY, ledger.data, etag=ledger.etag)
    return ledger


def batch_record(
    *,
    batch_id: str,
    run_id: str,
    images: int,
    features_rows: int,
    rejects_rows: int,
    planning_rejects: int,
    relandings: int = 0,
) -> dict:
    return {
        "batch_id": batch_id,
        "run_id": run_id,
        "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "images": images,
        "features_rows": features_rows,
        "rejects_rows": rejects_rows,
        "planning_rejects": planning_rejects,
        "relandings": relandings,
        "manifest": layout.manifest_key(batch_id),
        "features": layout.features_prefix(batch_id),
        "rejects": layout.rejects_prefix(batch_id),
        "landing_cleared": False,
    }


def add_batch(ledger: Ledger, record: dict, *, planned_after: list[str], pca: dict | None) -> bool:
    """Append `record` unless it is there already (a retried commit). False when it was.

    `planned_after` is the list of batches committed when this batch was planned: a batch
    committed since then by another run may hold the same images, so this commit refuses.
    """
    if ledger.version != VERSION:
        raise LedgerError("the ledger must be migrated to version 2 before a commit")
    if record["batch_id"] in ledger.batch_ids():
        return False
    newer = [b for b in ledger.batch_ids() if b not in set(planned_after)]
    if newer:
        raise LedgerError(
            f"batch(es) {', '.join(newer)} were committed by another run since batch "
            f"{record['batch_id']} was planned; their images may overlap, so this batch is "
            f"not committed (the next run plans what is left)"
        )
    ledger.batches.append(record)
    if pca is not None:
        ledger.data["pca"] = pca
    return True


def mark_cleared(ledger: Ledger, batch_id: str) -> None:
    for batch in ledger.batches:
        if batch["batch_id"] == batch_id:
            batch["landing_cleared"] = True
            return
    raise LedgerError(f"batch {batch_id} is not in the ledger")
