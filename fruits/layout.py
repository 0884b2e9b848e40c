"""Where everything lives in the bucket (the README draws this tree).

landing/<Label>/<image>                 input images, as uploaded; they leave once committed
batches/<batch_id>/manifest.jsonl       the batch's images: source URI, staged copy, label, size, ETag
batches/<batch_id>/images/<n>.<ext>     the staged copies (safe names): what the jobs read, kept
batches/<batch_id>/planning_rejects.jsonl  landing objects rejected before any job ran, with reasons
batches/<batch_id>/pca_inputs.txt       the features datasets its PCA reads (EMR; one per line)
features/batch=<batch_id>/              features parquet of that batch
rejects/batch=<batch_id>/               rejects parquet of that batch (path, label, reason)
classifier/run=<run_id>/                classify.py's outputs (model/, predictions/, metrics.json,
                                        confusion_matrix.png; names in fruits.contract.ClassifierOutputs)
pca/run=<run_id>/                       pca.py's outputs (names in fruits.contract.PcaOutputs):
                 vectors/               PCA vectors of every committed image
                 model/                 fitted Spark ML PipelineModel (centring + PCA)
                 report.json            PCA report, with report_scree.png, report_scatter.png
reports/<run_id>.json                   run report
state/ledger.json                       committed batches (the only thing a run commits)
state/keys/<hh>/<sha256(key)>.json      the last committed content of each landing key (re-landings)
code/<version>/                         Spark jobs and bootstrap for EMR (content-addressed)
wheelhouse/<key>/<arch>/                the wheels EMR nodes install at boot (one folder per
                                        requirements-emr.txt version and node architecture)
models/converted/                       EMR: converted MobileNetV2 models kept between jobs (featurize.py
                                        --model-cache; users keep weights files under models/ too)
emr-logs/                               EMR cluster and step logs (LogUri)
"""

from __future__ import annotations

import hashlib
import re

from fruits.contract import ClassifierOutputs, FeaturizeOutputs, PcaOutputs

LEDGER_KEY = "state/ledger.json"
MODEL_CACHE_PREFIX = "models/converted/"
REPORTS_PREFIX = "reports/"
CLASSIFIER_PREFIX = "classifier/"


def safe_run_id(run_id: str) -> str:
    """Airflow run ids contain ':' and '+'; keep keys readable and shell-safe."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", run_id).strip("_")


def batch_id_for(keys: list[str]) -> str:
    """Content-addressed: the same set of new objects (key and ETag) always gets the same batch id,
    so a retried or re-run batch overwrites its own outputs instead of adding a second copy."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()
    return f"b{digest[:16]}"


# Prefixes the pipeline writes: a landing prefix may not overlap any of them.
OUTPUT_PREFIXES = (
    "batches/",
    "features/",
    "rejects/",
    "pca/",
    CLASSIFIER_PREFIX,
    REPORTS_PREFIX,
    "state/",
    "code/",
    "wheelhouse/",
    "emr-logs/",
    MODEL_CACHE_PREFIX,
)


def manifest_key(batch_id: str) -> str:
    return f"batches/{batch_id}/manifest.jsonl"


def planning_rejects_key(batch_id: str) -> str:
    return f"batches/{batch_id}/planning_rejects.jsonl"


def staged_image_key(batch_id: str, index: int, extension: str) -> str:
    """A safe name for the batch's n-th image: never hidden, never a Hadoop or path trap."""
    return f"batches/{batch_id}/images/{index:06d}{extension}"


def key_marker(key: str) -> str:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"state/keys/{digest[:2]}/{digest}.json"


def pca_inputs_key(batch_id: str) -> str:
    """The features datasets the batch's PCA reads (committed batches + this one), one URI a line."""
    return f"batches/{batch_id}/pca_inputs.txt"


def features_prefix(batch_id: str) -> str:
    return f"features/batch={batch_id}/"


def rejects_prefix(batch_id: str) -> str:
    return f"rejects/batch={batch_id}/"


def featurize_outputs(bucket: str, batch_id: str) -> FeaturizeOutputs:
    return FeaturizeOutputs(
        features=s3_uri(bucket, features_prefix(batch_id)), rejects=s3_uri(bucket, rejects_prefix(batch_id))
    )


def pca_prefix(run_id: str) -> str:
    return f"pca/run={safe_run_id(run_id)}/"


def pca_outputs(bucket: str, run_id: str) -> PcaOutputs:
    return PcaOutputs(s3_uri(bucket, pca_prefix(run_id)))


def classifier_prefix(run_id: str) -> str:
    return f"{CLASSIFIER_PREFIX}run={safe_run_id(run_id)}/"


def classifier_outputs(bucket: str, run_id: str) -> ClassifierOutputs:
    return ClassifierOutputs(s3_uri(bucket, classifier_prefix(run_id)))


def report_key(run_id: str) -> str:
    return f"{REPORTS_PREFIX}{safe_run_id(run_id)}.json"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key
