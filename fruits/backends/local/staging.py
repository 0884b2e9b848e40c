"""Staging for the local backend: Spark in local mode on files copied from S3.

Without Hadoop's S3A jars local Spark cannot read s3a://, so the batch's images are copied
into a work folder through the S3 hook and the jobs run on local paths. The local manifest
keeps each image's `source` (its s3:// landing URI, the `path` of every output row) and only
points `read` at the local copy, so the outputs are published as they are. The Spark jobs
themselves stay storage-agnostic (on EMR they read s3:// directly).

    <work_dir>/batches/<batch_id>/images/<n>.<ext> staged images, named as their copies under
                                                   batches/<id>/images/ (safe names, never keys)
    <work_dir>/batches/<batch_id>/manifest.jsonl   the batch's manifest with local `read` paths
    <work_dir>/batches/<batch_id>/out/             featurize.py outputs (local paths)
    <work_dir>/features/batch=<batch_id>/          published features (s3 paths), PCA input
    <work_dir>/runs/<run_id>/pca_inputs.txt        the features folders pca.py reads
    <work_dir>/runs/<run_id>/pca/                  pca.py outputs before upload
    <work_dir>/runs/<run_id>/vectors/              the PCA vectors classify.py reads (classifier DAG)
    <work_dir>/runs/<run_id>/classifier/           classify.py outputs before upload
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path, PurePosixPath

from fruits import contract, layout
from fruits.contract import ClassifierOutputs, FeaturizeOutputs, PcaOutputs, PcaRun
from fruits.core import manifest, planning
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
    """Download the batch's staged copies and write a manifest whose `read` are local paths.

    A local name is the basename of the copy's key (`000001.jpg`), so no landing key can address
    a path outside the work folder, collide with another or exceed a file-system limit. Each
    download lands in a temporary name and is renamed once complete and of the planned size, so
    an interrupted download is never reused truncated. A copy that vanished stays in the manifest:
    the job rejects it as not found.
    """
    started = time.perf_counter()
    root = batch_dir(work_dir, batch_id)
    images = root / "images"
    entries = planning.read_entries(bucket, batch_id)
    local_entries, missing = [], 0
    for i, entry in enumerate(entries, 1):
        read_key = bucket.key_of(entry.read)
        target = images / PurePosixPath(read_key).name
        if not (target.exists() and target.stat().st_size == entry.size):
            if bucket.exists(read_key):
                bucket.download(read_key, target, expected_size=entry.size)
            else:
                missing += 1
        local_entries.append(dataclasses.replace(entry, read=str(target)))
        if i % 500 == 0 or i == len(entries):
            log.info("staged %d/%d images", i, len(entries))
    local_manifest = root / "manifest.jsonl"
    local_manifest.parent.mkdir(parents=True, exist_ok=True)
    local_manifest.write_text(manifest.dumps(local_entries), encoding="utf-8")
    return {"manifest": str(local_manifest), "images_root": str(images), "staged": len(entries) - missing,
            "missing": missing, "seconds": round(time.perf_counter() - started, 2)}


def publish_batch(bucket: Bucket, batch_id: str, work_dir: Path) -> dict:
    """Upload the batch's features and rejects to their layout prefixes (paths are already s3://)."""
    started = time.perf_counter()
    local = featurize_outputs(work_dir, batch_id)
    out = {}
    for name, source, prefix in (("features", local.features, layout.features_prefix(batch_id)),
                                 ("rejects", local.rejects, layout.rejects_prefix(batch_id))):
        bucket.upload_dir(Path(source), prefix)
        out[name] = bucket.uri(prefix)
    mirror = features_mirror(work_dir, batch_id)  # PCA reads it without a download
    if mirror.exists():
        shutil.rmtree(mirror)
    shutil.copytree(local.features, mirror)
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
