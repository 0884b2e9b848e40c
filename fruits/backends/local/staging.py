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
    <work_dir>/runs/<run_id>/previous/             the previous PCA run's state files (pca.py --previous)
    <work_dir>/runs/<run_id>/pca_history.txt       committed features folders, only when PCA refits
    <work_dir>/runs/<run_id>/pca/                  pca.py outputs before upload
    <work_dir>/runs/<run_id>/vectors/              the PCA vector datasets classify.py reads (classifier DAG),
    <work_dir>/runs/<run_id>/vectors_list.txt      listed here
    <work_dir>/runs/<run_id>/classifier/           classify.py outputs before upload
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path, PurePosixPath

from fruits import contract, layout
from fruits.contract import Batch, ClassifierOutputs, FeaturizeOutputs, PcaOutputs, PcaRun
from fruits.core import manifest, pca_policy, planning
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


def stage_pca_inputs(bucket: Bucket, batch: Batch, work_dir: Path, run_id: str, *, pca_k: int | None,
                     pca_variance: float | None, refit: str = "auto",
                     refit_angle: float = pca_policy.DEFAULT_REFIT_ANGLE) -> dict:
    """Stage only what pca.py will read: the new batch's features (publish_batch left a mirror),
    the previous run's state files (a few MB), and every committed batch's features only when a
    refit is due (`pca_policy.decide_locally`) or there is no previous state to merge with.

    Returns the job's inputs: `features`, `previous` (folder or None), `history_list` (file or
    None), `refit` (what pca.py is told: the local decision as always/never), and the decision.
    Mirrors are kept between runs: a file already there with the size of its object is not
    downloaded again.
    """
    started = time.perf_counter()
    features = features_mirror(work_dir, batch.batch_id)
    if not features.exists():
        bucket.download_prefix(layout.features_prefix(batch.batch_id), features)
    root = run_dir(work_dir, run_id)
    root.mkdir(parents=True, exist_ok=True)
    prefix = pca_policy.previous_prefix(getattr(batch, "pca_state", None))
    previous = decision = None
    told = refit
    if prefix:
        previous = root / "previous"
        for name in PcaOutputs(prefix).state_files().values():
            bucket.download(name, previous / name[len(prefix):])
        decision = pca_policy.decide_locally(previous, features, pca_k=pca_k, pca_variance=pca_variance,
                                             refit=refit, refit_angle=refit_angle)
        if decision is not None:
            told = "always" if decision.refit else "never"
    history = None
    committed = [b for b in batch.committed_batches if b != batch.batch_id]
    if committed and (prefix is None or (decision is not None and decision.refit)):
        folders = []
        for batch_id in committed:
            target = features_mirror(work_dir, batch_id)
            bucket.download_prefix(layout.features_prefix(batch_id), target)
            folders.append(str(target))
        history = root / "pca_history.txt"
        history.write_text(contract.features_list_text(folders), encoding="utf-8")
    if decision is not None:
        log.info("PCA: %s (%s)", "refit" if decision.refit else "project the new batch only", decision.reason)
    log.info("staged the PCA inputs in %.1f s: the new batch, %s, %s", time.perf_counter() - started,
             "the previous state" if previous else "no previous state (fit from scratch)",
             f"{len(committed)} committed batch(es)" if history else "no committed features")
    inputs = [features, *([previous] if previous else []),
              *(features_mirror(work_dir, b) for b in (committed if history else []))]
    input_bytes = sum(f.stat().st_size for folder in inputs for f in folder.rglob("*") if f.is_file())
    log.info("pca.py will read %d bytes", input_bytes)
    return {"features": str(features), "previous": str(previous) if previous else None,
            "history_list": str(history) if history else None, "refit": told,
            "decision": decision.to_dict() if decision is not None else None,
            "input_bytes": input_bytes}


def publish_pca(bucket: Bucket, run_id: str, work_dir: Path) -> dict[str, str]:
    """Upload pca.py's outputs to pca/run=<run_id>/; return their s3:// URIs by name."""
    source = pca_outputs(work_dir, run_id).root
    prefix = layout.pca_prefix(run_id)
    count = bucket.upload_dir(Path(source), prefix)
    log.info("published %d PCA files to %s", count, bucket.uri(prefix))
    return layout.pca_outputs(bucket.name, run_id).uris()


def stage_vectors(bucket: Bucket, pca_run: PcaRun, work_dir: Path, run_id: str) -> dict:
    """A local copy of the vectors classify.py reads (their paths stay s3:// URIs): exactly the
    datasets of the run's vectors list (every committed batch of its space), listed in a local
    file; a run from before incremental PCA has one vectors folder instead."""
    target = run_dir(work_dir, run_id) / "vectors"
    if not pca_run.vectors_list:
        count = bucket.download_prefix(pca_run.vectors_key(), target)
        if not count:
            raise FileNotFoundError(f"no PCA vectors under {bucket.uri(pca_run.vectors_key())}")
        log.info("staged %d vector file(s) of PCA run %s", count, pca_run.run_id)
        return {"vectors": str(target)}
    datasets = [line.strip() for line in bucket.read_text(pca_run.vectors_list).splitlines() if line.strip()]
    folders = []
    for i, uri in enumerate(datasets):
        key = bucket.key_of(uri)
        folder = target / f"{i:06d}" / key.rstrip("/").rsplit("/", 1)[-1]
        if not bucket.download_prefix(key, folder):
            raise FileNotFoundError(f"no PCA vectors under {uri} (listed in {bucket.uri(pca_run.vectors_list)})")
        folders.append(str(folder))
    listing = run_dir(work_dir, run_id) / "vectors_list.txt"
    listing.write_text(contract.features_list_text(folders), encoding="utf-8")
    log.info("staged the %d vector dataset(s) of PCA run %s", len(folders), pca_run.run_id)
    return {"vectors_list": str(listing)}


def publish_classifier(bucket: Bucket, run_id: str, work_dir: Path) -> dict[str, str]:
    """Upload classify.py's outputs to classifier/run=<run_id>/; return their s3:// URIs by name."""
    source = Path(classifier_outputs(work_dir, run_id).root)
    prefix = layout.classifier_prefix(run_id)
    count = bucket.upload_dir(source, prefix)
    log.info("published %d classifier files to %s", count, bucket.uri(prefix))
    return layout.classifier_outputs(bucket.name, run_id).uris()
