"""Which landing objects are new, and the batch that will process them.

The landing prefix holds only objects no committed batch has finished with: a batch's images
leave it after its commit (`clear_landing`), so finding new images costs one LIST request per
1,000 objects waiting, whatever the history. Planning *claims* each new image by a server-side
copy, conditional on the ETag it listed, to a safe name under `batches/<id>/images/`; the jobs
read those copies, so an image re-uploaded during the run stays new for the next run, and no key
(hidden-looking, with ':' or line breaks) ever reaches a file system or a Hadoop path.

Crash points: before the commit nothing has left the landing prefix (the next run plans the
same objects again, under the same batch id when nothing else arrived); after the commit, a
batch whose images have not all left is finished by the next sensor/plan before anything new
is planned (`finish_pending`), and its images never count as new meanwhile.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fruits import layout
from fruits.contract import Batch
from fruits.core import contents, manifest
from fruits.core import keys as key_rules
from fruits.core import ledger as ledger_mod
from fruits.errors import PermanentError
from fruits.storage import Bucket, ConcurrentWriteError, ObjectInfo

log = logging.getLogger(__name__)

S3_THREADS = 16  # copies, HEADs and deletes of a batch run side by side


class InvalidLandingPrefix(PermanentError, ValueError):
    """A landing prefix the pipeline must not read: empty, or overlapping its own outputs."""


def normalise_prefix(prefix: str) -> str:
    """'landing' -> 'landing/'; refuses a prefix that would make the pipeline read its own outputs."""
    prefix = (prefix or "").strip().lstrip("/")
    if not prefix:
        raise InvalidLandingPrefix(
            "the landing prefix must not be empty (the whole bucket holds the pipeline's outputs)"
        )
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    for output in layout.OUTPUT_PREFIXES:
        if prefix.startswith(output) or output.startswith(prefix):
            raise InvalidLandingPrefix(
                f"the landing prefix {prefix!r} overlaps the pipeline's output prefix {output!r}"
            )
    return prefix


def parallel(function, items):
    items = list(items)
    if len(items) <= 1:
        return [function(i) for i in items]
    with ThreadPoolExecutor(max_workers=S3_THREADS) as pool:
        return list(pool.map(function, items))


# ----------------------------------------------------------------------------- survey


@dataclass
class Survey:
    """Every object under the landing prefix, in exactly one bucket (pending: already committed)."""

    planned: list[tuple[ObjectInfo, str | None]] = field(default_factory=list)  # (object, label)
    rejected: list[manifest.PlanningReject] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)
    pending: int = 0

    @property
    def actionable(self) -> int:
        return len(self.planned) + len(self.rejected)


def pending_landing_keys(bucket: Bucket, ledger: ledger_mod.Ledger) -> dict[str, str]:
    """Landing keys of committed batches that have not left yet, with the ETag committed.

    Version 1 ledgers list every committed key (their ETags are unknown: "")."""
    if ledger.version == 1:
        return {key: "" for batch in ledger.batches for key in batch["keys"]}
    pending: dict[str, str] = {}
    for batch in ledger.uncleared():
        for entry in read_entries(bucket, batch["batch_id"]):
            pending[bucket.key_of(entry.source)] = entry.etag
        for reject in read_planning_rejects(bucket, batch["batch_id"]):
            pending[bucket.key_of(reject.path)] = reject.etag
    return pending


def survey(
    bucket: Bucket, landing_prefix: str, ledger: ledger_mod.Ledger, max_bytes: int = key_rules.DEFAULT_MAX_IMAGE_BYTES
) -> Survey:
    prefix = normalise_prefix(landing_prefix)
    pending = pending_landing_keys(bucket, ledger)
    result = Survey()
    for obj in bucket.list_objects(prefix):
        if obj.key in pending and pending[obj.key] in ("", obj.etag):
            result.pending += 1
            continue
        decision = key_rules.decide(obj.key[len(prefix) :], obj.size, max_bytes=max_bytes)
        if decision.outcome == "planned":
            result.planned.append((obj, decision.label))
        elif decision.outcome == "rejected":
            result.rejected.append(
                manifest.PlanningReject(bucket.uri(obj.key), decision.label, decision.reason, obj.size, obj.etag)
            )
        else:
            result.ignored[decision.reason] += 1
    return result


def count_new(bucket: Bucket, landing_prefix: str) -> int:
    """Objects a run would act on (plan or reject): what the sensor waits for."""
    return survey(bucket, landing_prefix, ledger_mod.load(bucket)).actionable


# ----------------------------------------------------------------------------- manifests


def read_entries(bucket: Bucket, batch_id: str) -> list[manifest.Entry]:
    return manifest.entries(bucket.read_text(layout.manifest_key(batch_id)), bucket.name)


def read_planning_rejects(bucket: Bucket, batch_id: str) -> list[manifest.PlanningReject]:
    key = layout.planning_rejects_key(batch_id)
    return manifest.planning_rejects(bucket.read_text(key), bucket.name) if bucket.exists(key) else []


def manifest_keys(bucket: Bucket, batch_id: str) -> list[str]:
    """The landing keys of a batch's planned images (its outputs' `path` column, as keys)."""
    return [bucket.key_of(entry.source) for entry in read_entries(bucket, batch_id)]


# ----------------------------------------------------------------------------- re-landings


def previous_content(bucket: Bucket, key: str) -> dict | None:
    """What the last committed batch holding `key` recorded (batch id, ETag, size), or None."""
    return bucket.read_json_versioned(layout.key_marker(key))[0]


def record_keys(bucket: Bucket, batch_id: str, objects: list[tuple[str, str, int]]) -> None:
    parallel(
        lambda o: bucket.write_json(
            layout.key_marker(o[0]), {"key": o[0], "etag": o[1], "size": o[2], "batch_id": batch_id}
        ),
        objects,
    )


# ----------------------------------------------------------------------------- plan


def _claim(bucket: Bucket, batch_id: str, planned: list[tuple[ObjectInfo, str | None]]) -> list[manifest.Entry]:
    """Copy each planned object to its safe name if it still holds the listed content."""

    def copy(item):
        index, (obj, label) = item
        target = layout.staged_image_key(batch_id, index, key_rules.extension_of(obj.key))
        if bucket.copy_if_unchanged(obj.key, obj.etag, target):
            return manifest.Entry(bucket.uri(obj.key), bucket.uri(target), label, obj.size, obj.etag)
        log.warning("%s changed or vanished since it was listed: left for the next run", bucket.uri(obj.key))
        return None

    return [e for e in parallel(copy, enumerate(planned, 1)) if e is not None]


def _split_relandings(bucket: Bucket, found: Survey) -> int:
    """Reject re-uploads of content already processed under the same key; count the other
    re-landings (same key, new content), which are processed like any new image."""
    previous = parallel(lambda item: previous_content(bucket, item[0].key), found.planned)
    relandings, kept = 0, []
    for (obj, label), before in zip(found.planned, previous):
        if before and before.get("etag") == obj.etag and before.get("size") == obj.size:
            found.rejected.append(
                manifest.PlanningReject(
                    bucket.uri(obj.key),
                    label,
                    f"already processed (same content, batch {before['batch_id']})",
                    obj.size,
                    obj.etag,
                )
            )
            continue
        relandings += before is not None
        kept.append((obj, label))
    found.planned = kept
    return relandings


def plan_batch(bucket: Bucket, landing_prefix: str, max_bytes: int = key_rules.DEFAULT_MAX_IMAGE_BYTES) -> Batch:
    """Claim the new images, write the batch's manifest and planning rejects, describe the batch.

    The key lists stay in S3 (manifest.jsonl), not in XCom: batches can be large.
    """
    prefix = normalise_prefix(landing_prefix)
    ledger = ledger_mod.load(bucket)
    if ledger.version == 1:
        ledger = migrate(bucket, ledger, prefix)
    finish_pending(bucket, ledger)
    found = survey(bucket, prefix, ledger, max_bytes)
    relandings = _split_relandings(bucket, found)
    if not found.actionable:
        raise LookupError(f"no new images under {bucket.uri(prefix)}")
    batch_id = layout.batch_id_for(
        [f"{o.key}\n{o.etag}" for o, _ in found.planned] + [f"{r.path}\n{r.etag}" for r in found.rejected]
    )
    entries = _claim(bucket, batch_id, found.planned)
    bucket.write_text(layout.manifest_key(batch_id), manifest.dumps(entries))
    bucket.write_text(layout.planning_rejects_key(batch_id), manifest.dumps(found.rejected))
    log.info(
        "batch %s: %d image(s) planned, %d rejected at planning, ignored %s",
        batch_id,
        len(entries),
        len(found.rejected),
        dict(found.ignored) or "none",
    )
    return Batch(
        batch_id=batch_id,
        bucket=bucket.name,
        images=len(entries),
        committed_batches=ledger.batch_ids(),
        committed_features_rows=ledger.features_rows(),
        planning_rejects=len(found.rejected),
        planning_reject_reasons=dict(Counter(r.reason.split(":", 1)[0].split(" (")[0] for r in found.rejected)),
        ignored=dict(found.ignored),
        relandings=relandings,
        pca_state=ledger.pca,
        unlabelled=sum(1 for e in entries if e.label is None),
    )


# ----------------------------------------------------------------------------- after the commit


def clear_landing(bucket: Bucket, batch_id: str) -> dict:
    """Delete a committed batch's objects from the landing prefix, each only while it still holds
    the committed content; record each key's content for re-landing detection."""
    entries = read_entries(bucket, batch_id)
    rejects = read_planning_rejects(bucket, batch_id)
    objects = [(bucket.key_of(e.source), e.etag, e.size) for e in entries] + [
        (bucket.key_of(r.path), r.etag, r.size_bytes) for r in rejects
    ]
    record_keys(bucket, batch_id, objects)
    contents.record(bucket, batch_id, parallel)
    removed = parallel(lambda o: bucket.delete_if_unchanged(o[0], o[1]), objects)
    kept = len(objects) - sum(removed)
    if kept:
        log.info("batch %s: %d landing object(s) changed since planning and stay as new", batch_id, kept)
    return {"cleared": sum(removed), "changed_since_planning": kept}


def mark_cleared(bucket: Bucket, batch_id: str, attempts: int = 5) -> ledger_mod.Ledger:
    """Flag the batch as cleared; setting a flag commutes, so a lost race is simply retried."""
    for attempt in range(attempts):
        ledger = ledger_mod.load(bucket)
        ledger_mod.mark_cleared(ledger, batch_id)
        try:
            return ledger_mod.save(bucket, ledger)
        except ConcurrentWriteError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def finish_pending(bucket: Bucket, ledger: ledger_mod.Ledger) -> None:
    """Finish clearing batches committed by a run that stopped before it was done."""
    for batch in ledger.uncleared():
        log.info(
            "batch %s was committed but its images had not all left the landing prefix: clearing", batch["batch_id"]
        )
        clear_landing(bucket, batch["batch_id"])
        mark_cleared(bucket, batch["batch_id"])


# ----------------------------------------------------------------------------- migration


def migrate(bucket: Bucket, ledger: ledger_mod.Ledger, landing_prefix: str) -> ledger_mod.Ledger:
    """Rewrite a version 1 ledger as version 2, keeping every committed batch.

    Each v1 batch gets a manifest.jsonl whose images are claimed like a new batch's (copied to
    safe names, so they are kept when they leave the landing prefix); its features and rejects
    are unchanged. The new ledger is written conditionally on the v1 version that was read.
    """
    batches = []
    for old in ledger.batches:
        batch_id = old["batch_id"]
        heads = parallel(bucket.head, old["keys"])
        present = [
            (h, key_rules.label_of(h.key[len(landing_prefix) :]) if h.key.startswith(landing_prefix) else None)
            for h in heads
            if h is not None
        ]
        entries = _claim(bucket, batch_id, present)
        bucket.write_text(layout.manifest_key(batch_id), manifest.dumps(entries))
        record = ledger_mod.batch_record(
            batch_id=batch_id,
            run_id=old.get("run_id", ""),
            images=old["images"],
            features_rows=old["features_rows"],
            rejects_rows=old["rejects_rows"],
            planning_rejects=0,
        )
        record["committed_at"] = old.get("committed_at", record["committed_at"])
        record["migrated_from"] = 1
        batches.append(record)
        log.info(
            "ledger v1 -> v2: batch %s (%d keys, %d still under the landing prefix)",
            batch_id,
            len(old["keys"]),
            len(entries),
        )
    migrated = ledger_mod.Ledger({"version": ledger_mod.VERSION, "batches": batches, "pca": None}, ledger.etag)
    return ledger_mod.save(bucket, migrated)
