"""Which images are new, and the batch that will process them."""

from __future__ import annotations

from fruits import contract, layout
from fruits.contract import Batch
from fruits.core import ledger as ledger_mod
from fruits.storage import Bucket


def normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def new_image_keys(bucket: Bucket, landing_prefix: str, ledger: dict | None = None) -> list[str]:
    """Image keys under the landing prefix that no committed batch holds."""
    ledger = ledger if ledger is not None else ledger_mod.read(bucket)
    done = ledger_mod.committed_keys(ledger)
    return [k for k in bucket.list_keys(normalise_prefix(landing_prefix))
            if contract.is_image_key(k) and k not in done]


def plan_batch(bucket: Bucket, landing_prefix: str) -> Batch:
    """Write the manifest of the new images and describe the batch for downstream tasks.

    The key list itself stays in the manifest (S3), not in XCom: batches can be large.
    """
    ledger = ledger_mod.read(bucket)
    keys = new_image_keys(bucket, landing_prefix, ledger)
    if not keys:
        raise LookupError(f"no new images under {bucket.uri(normalise_prefix(landing_prefix))}")
    batch_id = layout.batch_id_for(keys)
    bucket.write_text(layout.manifest_key(batch_id), "".join(bucket.uri(k) + "\n" for k in keys))
    return Batch(batch_id=batch_id, bucket=bucket.name, images=len(keys),
                 committed_batches=ledger_mod.committed_batch_ids(ledger),
                 committed_features_rows=ledger_mod.committed_features_rows(ledger))


def manifest_keys(bucket: Bucket, batch_id: str) -> list[str]:
    """The bucket keys listed in a batch's manifest."""
    text = bucket.read_text(layout.manifest_key(batch_id))
    return [layout.split_s3_uri(line)[1] for line in text.splitlines() if line.strip()]


def pca_input_uris(batch: Batch) -> list[str]:
    """The features datasets of every committed batch plus this one, as s3:// URIs."""
    return [layout.s3_uri(batch.bucket, layout.features_prefix(b)) for b in batch.pca_batches()]
