"""Duplicate contents: the same bytes landed under two keys, in one batch or across batches.

featurize.py records each image's sha256. At the commit, every content of the batch is looked
up in a content index (`state/contents/<hh>/<sha256>.json`, one small object per content, so
a lookup costs one request per new image whatever the history) and then recorded there. The
report counts duplicates within the batch and of earlier batches; the PCA fit counts each
content of a batch once.
"""

from __future__ import annotations

from collections import Counter

from fruits import layout
from fruits.storage import Bucket


def marker_key(sha256: str) -> str:
    return f"state/contents/{sha256[:2]}/{sha256}.json"


def batch_contents(bucket: Bucket, batch_id: str) -> dict[str, str]:
    """sha256 -> the first path holding it, for the batch's featurized images."""
    try:
        table = bucket.read_parquet(layout.features_prefix(batch_id), ["path", "sha256"])
    except FileNotFoundError:
        return {}
    first: dict[str, str] = {}
    for path, sha in zip(table.column("path").to_pylist(), table.column("sha256").to_pylist()):
        if sha:
            first.setdefault(sha, path)
    return first


def count_duplicates(bucket: Bucket, batch_id: str, parallel) -> dict[str, int]:
    """How many featurized images repeat a content of this batch, or of a committed batch."""
    try:
        table = bucket.read_parquet(layout.features_prefix(batch_id), ["sha256"])
    except FileNotFoundError:
        return {"within_batch": 0, "of_earlier_batches": 0}
    counts = Counter(sha for sha in table.column("sha256").to_pylist() if sha)
    earlier = parallel(lambda sha: bucket.read_json_versioned(marker_key(sha))[0], list(counts))
    return {
        "within_batch": sum(n - 1 for n in counts.values()),
        "of_earlier_batches": sum(1 for found in earlier if found and found.get("batch_id") != batch_id),
    }


def record(bucket: Bucket, batch_id: str, parallel) -> int:
    """Add the batch's contents to the index (the first path wins; idempotent for a retry)."""
    contents = batch_contents(bucket, batch_id)
    parallel(
        lambda item: (
            bucket.read_json_versioned(marker_key(item[0]))[0]
            or bucket.write_json(marker_key(item[0]), {"sha256": item[0], "path": item[1], "batch_id": batch_id})
        ),
        list(contents.items()),
    )
    return len(contents)
