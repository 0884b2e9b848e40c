"""A batch's manifest: JSON Lines, one object per image, written by planning.

    {"source": "s3://b/landing/Apple/_DSC0001.JPG", "read": "s3://b/batches/<id>/images/000001.jpg",
     "label": "Apple", "size": 123456, "etag": "\"9b2c...\""}

`source` is the image's identity (the `path` of every output row), `read` where its bytes are
(a copy under a safe name), `label` the folder under the landing prefix (null: none). Lines are
written with `ensure_ascii` so that no character of a key (CR, U+2028, ...) can start a line of
its own, and read back by splitting on "\\n" only. Every entry is checked to belong to the
batch's bucket: a manifest can never make the pipeline read or record another bucket's object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from fruits import layout
from fruits.errors import PermanentError


class ManifestError(PermanentError, ValueError):
    """A manifest line that is not a valid entry of this batch."""


@dataclass(frozen=True)
class Entry:
    source: str
    read: str
    label: str | None
    size: int
    etag: str

    def source_key(self, bucket: str) -> str:
        return _key_in(bucket, self.source)

    def check(self, bucket: str) -> None:
        self.source_key(bucket)
        if self.read.startswith("s3://"):
            _key_in(bucket, self.read)


@dataclass(frozen=True)
class PlanningReject:
    """A landing object rejected before any job ran (same columns as featurize's rejects)."""

    path: str
    label: str | None
    reason: str
    size_bytes: int
    etag: str

    def source_key(self, bucket: str) -> str:
        return _key_in(bucket, self.path)

    def check(self, bucket: str) -> None:
        self.source_key(bucket)


def _key_in(bucket: str, uri: str) -> str:
    owner, key = layout.split_s3_uri(uri)
    if owner != bucket:
        raise ManifestError(f"{uri} is not in the batch's bucket {bucket}")
    return key


def dumps(records) -> str:
    return "".join(json.dumps(asdict(r), ensure_ascii=True, sort_keys=True) + "\n" for r in records)


def _loads(text: str, cls, bucket: str, what: str) -> list:
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = cls(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"{what} line {number} is not a valid entry: {exc}") from None
        record.check(bucket)  # raises for another bucket
        records.append(record)
    return records


def entries(text: str, bucket: str) -> list[Entry]:
    return _loads(text, Entry, bucket, "manifest")


def planning_rejects(text: str, bucket: str) -> list[PlanningReject]:
    return _loads(text, PlanningReject, bucket, "planning rejects")
