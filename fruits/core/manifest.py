"""A batch's manifest as the DAG writes and reads it: JSON Lines, one entry per planned image.

    {"source": "s3://b/landing/Apple/_DSC0001.JPG", "read": "s3://b/batches/<id>/images/000001.jpg",
     "label": "Apple", "size": 123456, "etag": "\"9b2c...\""}

The format is featurize.py's: `Entry`, the parser and the writer are `fruits_spark.manifest`'s,
so the DAG can never write a manifest the job reads differently. What only the DAG needs is here:
every entry read back must belong to the batch's bucket (a manifest can never make the pipeline
read or record another bucket's object) and carry the landing object's size and ETag (clearing
the landing prefix needs them), and the planning rejects (`planning_rejects.jsonl`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fruits import layout
from fruits.errors import PermanentError
from fruits_spark import manifest as manifest_format
from fruits_spark.manifest import Entry, dumps, lines

__all__ = ["Entry", "ManifestError", "PlanningReject", "dumps", "entries", "planning_rejects"]


class ManifestError(PermanentError, manifest_format.ManifestError):
    """A manifest the pipeline cannot trust (no retry makes it right): the format's own error,
    raised again as a permanent one, or an entry of another bucket."""


@dataclass(frozen=True)
class PlanningReject:
    """A landing object rejected before any job ran (same columns as featurize's rejects)."""

    path: str
    label: str | None
    reason: str
    size_bytes: int
    etag: str


def _check_in(bucket: str, uri: str) -> None:
    owner, _ = layout.split_s3_uri(uri)
    if owner != bucket:
        raise ManifestError(f"{uri} is not in the batch's bucket {bucket}")


def entries(text: str, bucket: str) -> list[Entry]:
    """A manifest planning wrote, each entry checked to be of `bucket` and to say its size and ETag."""
    try:
        found = manifest_format.parse_jsonl(text)
    except manifest_format.ManifestError as exc:
        raise ManifestError(str(exc)) from None
    for entry in found:
        _check_in(bucket, entry.source)
        if entry.read.startswith("s3://"):
            _check_in(bucket, entry.read)
        if entry.size is None or entry.etag is None:
            raise ManifestError(f"manifest entry {entry.source} has no size or ETag")
    return found


def planning_rejects(text: str, bucket: str) -> list[PlanningReject]:
    records = []
    for number, line in lines(text):
        if not line.strip():
            continue
        try:
            record = PlanningReject(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"planning rejects line {number} is not a valid entry: {exc}") from None
        _check_in(bucket, record.path)
        records.append(record)
    return records
