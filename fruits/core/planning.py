"""Which images are new, and the batch that will process them."""

from __future__ import annotations

from fruits import layout, ledger as ledger_mod, storage


def normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def new_image_keys(hook, bucket: str, landing_prefix: str, ledger: dict | None = None) -> list[str]:
    """Image keys under the landing prefix that no committed batch holds."""
    ledger = ledger if ledger is not None else ledger_mod.read(hook, bucket)
    done = ledger_mod.committed_keys(ledger)
    return [k for k in storage.list_keys(hook, bucket, normalise_prefix(landing_prefix))
            if layout.is_image_key(k) and k not in done]


def plan_batch(hook, bucket: str, landing_prefix: str) -> dict:
    """Write the manifest of the new images and describe the batch for downstream tasks.

    The key list itself stays in the manifest (S3), not in XCom: batches can be large.
    """
    ledger = ledger_mod.read(hook, bucket)
    keys = new_image_keys(hook, bucket, landing_prefix, ledger)
    if not keys:
        raise LookupError(f"no new images under s3://{bucket}/{normalise_prefix(landing_prefix)}")
    batch_id = layout.batch_id_for(keys)
    manifest = "".join(layout.s3_uri(bucket, k) + "\n" for k in keys)
    hook.load_string(manifest, key=layout.manifest_key(batch_id), bucket_name=bucket, replace=True)
    committed = ledger_mod.committed_batch_ids(ledger)
    pca_inputs = "".join(u + "\n" for u in layout.pca_input_uris(bucket, committed, batch_id))
    hook.load_string(pca_inputs, key=layout.pca_inputs_key(batch_id), bucket_name=bucket, replace=True)
    return {
        "batch_id": batch_id,
        "bucket": bucket,
        "images": len(keys),
        "manifest": layout.manifest_key(batch_id),
        "pca_inputs": layout.pca_inputs_key(batch_id),
        "features": layout.features_prefix(batch_id),
        "rejects": layout.rejects_prefix(batch_id),
        "committed_batches": committed,
        "committed_features_rows": sum(b["features_rows"] for b in ledger["batches"]),
    }


def manifest_keys(hook, bucket: str, batch_id: str) -> list[str]:
    """The bucket keys listed in a batch's manifest."""
    text = hook.read_key(layout.manifest_key(batch_id), bucket_name=bucket)
    return [layout.split_s3_uri(line)[1] for line in text.splitlines() if line.strip()]
