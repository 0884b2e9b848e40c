"""Staging for the local backend: Spark in local mode on files copied from S3.

Without Hadoop's S3A jars local Spark cannot read s3a://, so the batch's images are copied
into a work folder through the S3 hook, the jobs run on local paths, and their outputs are
published back to the bucket's layout with every `path` rewritten to its s3:// URI. The
Spark jobs themselves stay storage-agnostic (on EMR they read s3:// directly).

    <work_dir>/batches/<batch_id>/images/<key>     staged images (mirror of the landing keys)
    <work_dir>/batches/<batch_id>/manifest.txt     local paths given to featurize.py
    <work_dir>/batches/<batch_id>/out/             featurize.py outputs (local paths)
    <work_dir>/features/batch=<batch_id>/          published features (s3 paths), PCA input
    <work_dir>/runs/<run_id>/pca_inputs.txt        the features folders pca.py reads
    <work_dir>/runs/<run_id>/pca/                  pca.py outputs before upload
    <work_dir>/runs/<run_id>/vectors/              the PCA vectors classify.py reads (classifier DAG)
    <work_dir>/runs/<run_id>/classifier/           classify.py outputs before upload
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fruits import contract, layout
from fruits.contract import ClassifierOutputs, FeaturizeOutputs, PcaOutputs, PcaRun
from fruits.core import planning
from fruits.storage import Bucket

log = logging.getLogger(__name__)


def batch_dir(work_dir: Path, batch_id: str) -> Path:
    return work_dir / "batches" / batch_id


def features_mirror(work_dir: Path, batch_id: str) -> Path:
    return work_dir / "features" / f"batch={batch_id}"


def run_dir(work_dir: Path, run_id: str) -> Path:
    return work_dir / "runs" / layout.safe_run_id(run_id)


def pca_outputs(work_dir: Path, run_id: str) -> PcaOutputs:
    return PcaOutputs(str(run_dir(work_dir, run_id) / "pca"))


def classifier_outputs(work_dir: Path, run_id: str) -> ClassifierOutputs:
    return ClassifierOutputs(str(run_dir(work_dir, run_id) / "classifier"))


def featurize_outputs(work_dir: Path, batch_id: str) -> FeaturizeOutputs:
    out = batch_dir(work_dir, batch_id) / "out"
    return FeaturizeOutputs(features=str(out / "features"), rejects=str(out / "rejects"))


def stage_images(bucket: Bucket, batch_id: str, work_dir: Path) -> dict:
    """Copy the batch's images into the work folder and write a manifest of local paths.

    A key that vanished since planning is still listed: the job rejects it as not found.
    """
    started = time.perf_counter()
    root = batch_dir(work_dir, batch_id)
    images = root / "images"
    keys = planning.manifest_keys(bucket, batch_id)
    missing = 0
    for i, key in enumerate(keys, 1):
        target = images / key
        if not bucket.exists(key):
            missing += 1
            continue
        if not target.exists():
            bucket.download(key, target)
        if i % 500 == 0 or i == len(keys):
            log.info("staged %d/%d images", i, len(keys))
    manifest = root / "manifest.txt"
    manifest.write_text("".join(f"{images / key}\n" for key in keys), encoding="utf-8")
    return {"manifest": str(manifest), "images_root": str(images), "staged": len(keys) - missing,
            "missing": missing, "seconds": round(time.perf_counter() - started, 2)}


def rewrite_paths(table, local_root: str, bucket: str):
    """Replace `file:<local_root>/<key>` by `s3://<bucket>/<key>` in the `path` column."""
    import pyarrow as pa

    prefix = "file:" + local_root.rstrip("/") + "/"

    def to_s3(path: str) -> str:
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not under the staging folder {local_root}")
        return layout.s3_uri(bucket, path[len(prefix):])

    paths = pa.array([to_s3(p) for p in table.column("path").to_pylist()], type=pa.string())
    return table.set_column(table.schema.get_field_index("path"), "path", paths)


def _rewrite_dataset(source: Path, target: Path, local_root: str, bucket: str) -> None:
    import shutil

    import pyarrow.parquet as pq

    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for part in sorted(source.glob("*.parquet")):
        pq.write_table(rewrite_paths(pq.read_table(part), local_root, bucket), target / part.name)


def publish_batch(bucket: Bucket, batch_id: str, work_dir: Path, images_root: str) -> dict:
    """Upload the batch's features and rejects with s3:// paths to their layout prefixes."""
    started = time.perf_counter()
    local = featurize_outputs(work_dir, batch_id)
    out = {}
    for name, source, target, prefix in (
        ("features", local.features, features_mirror(work_dir, batch_id), layout.features_prefix(batch_id)),
        ("rejects", local.rejects, batch_dir(work_dir, batch_id) / "published" / "rejects",
         layout.rejects_prefix(batch_id)),
    ):
        _rewrite_dataset(Path(source), target, images_root, bucket.name)
        bucket.upload_dir(target, prefix)
        out[name] = bucket.uri(prefix)
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


def stage_pca_inputs(bucket: Bucket, batch_ids: list[str], work_dir: Path, run_id: str) -> Path:
    """Local copies of the features pca.py reads, listed in one file. Mirrors are kept between
    runs: a file already there with the size of its object is not downloaded again."""
    folders = []
    for batch_id in batch_ids:
        target = features_mirror(work_dir, batch_id)
        bucket.download_prefix(layout.features_prefix(batch_id), target)
        folders.append(str(target))
    listing = run_dir(work_dir, run_id) / "pca_inputs.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(contract.features_list_text(folders), encoding="utf-8")
    return listing


def publish_pca(bucket: Bucket, run_id: str, work_dir: Path) -> dict[str, str]:
    """Upload pca.py's outputs to pca/run=<run_id>/; return their s3:// URIs by name."""
    source = pca_outputs(work_dir, run_id).root
    prefix = layout.pca_prefix(run_id)
    count = bucket.upload_dir(Path(source), prefix)
    log.info("published %d PCA files to %s", count, bucket.uri(prefix))
    return layout.pca_outputs(bucket.name, run_id).uris()


def stage_vectors(bucket: Bucket, pca_run: PcaRun, work_dir: Path, run_id: str) -> Path:
    """A local copy of the PCA run's vectors for classify.py (their paths stay s3:// URIs)."""
    target = run_dir(work_dir, run_id) / "vectors"
    count = bucket.download_prefix(pca_run.vectors_key(), target)
    if not count:
        raise FileNotFoundError(f"no PCA vectors under {bucket.uri(pca_run.vectors_key())}")
    log.info("staged %d vector file(s) of PCA run %s", count, pca_run.run_id)
    return target


def publish_classifier(bucket: Bucket, run_id: str, work_dir: Path) -> dict[str, str]:
    """Upload classify.py's outputs to classifier/run=<run_id>/; return their s3:// URIs by name."""
    source = Path(classifier_outputs(work_dir, run_id).root)
    prefix = layout.classifier_prefix(run_id)
    count = bucket.upload_dir(source, prefix)
    log.info("published %d classifier files to %s", count, bucket.uri(prefix))
    return layout.classifier_outputs(bucket.name, run_id).uris()
