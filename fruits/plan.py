"""The jobs of a run, as data: written once here, run by either backend.

A batch becomes two jobs (featurize.py, then pca.py), a classifier run one (classify.py). A `Job`
names its script, its arguments (command lines from `fruits.contract`, on s3:// URIs only), what
it reads and what it writes. The EMR backend submits each job as a step (`backends.emr.steps`);
the local backend hands the same arguments to spark-submit, whose Spark reads and writes the
bucket through S3A (`backends.local`). Nothing is copied out of the bucket on either path.
`compute_result` turns a run's jobs and their timings into the `ComputeResult` both return.

    featurize  reads batches/<id>/manifest.jsonl (and the staged images it lists)
               writes features/batch=<id>/, rejects/batch=<id>/
    pca        reads features/batch=<id>/, the previous committed run's state (pca/run=<prev>/),
               batches/<id>/pca_inputs.txt (the committed features, read only when it refits)
               writes pca/run=<run_id>/
    classify   reads a committed PCA run's vectors list, writes classifier/run=<run_id>/
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fruits import contract, layout
from fruits.contract import Batch, ComputeResult, PcaRun, _Record
from fruits.core import pca_policy

FEATURIZE, PCA, CLASSIFY = "featurize", "pca", "classify"
SCRIPTS = {FEATURIZE: contract.FEATURIZE_SCRIPT, PCA: contract.PCA_SCRIPT, CLASSIFY: contract.CLASSIFY_SCRIPT}


@dataclass(frozen=True)
class Job(_Record):
    """One Spark job of a run (XCom holds it as a plain dict, like every record)."""

    name: str  # featurize | pca | classify
    subject: str  # the batch id or run id it works for: names the EMR step
    args: list[str]
    reads: list[str]
    writes: dict[str, str] = field(default_factory=dict)

    @property
    def script(self) -> str:
        return SCRIPTS[self.name]

    @property
    def app_name(self) -> str:
        return f"fruits-{self.name}"


def featurize_job(batch: Batch, *, weights: str, image_size: int) -> Job:
    """featurize.py on the batch's manifest, writing straight to the batch's prefixes. Converted
    models are kept under models/converted/ in the bucket: only a run's first job converts."""
    manifest = layout.s3_uri(batch.bucket, layout.manifest_key(batch.batch_id))
    outputs = layout.featurize_outputs(batch.bucket, batch.batch_id)
    return Job(
        FEATURIZE,
        batch.batch_id,
        contract.featurize_args(
            manifest=manifest,
            outputs=outputs,
            weights=weights,
            image_size=image_size,
            model_cache=layout.s3_uri(batch.bucket, layout.MODEL_CACHE_PREFIX),
        ),
        reads=[manifest],
        writes={"features": outputs.features, "rejects": outputs.rejects},
    )


def pca_inputs_uri(batch: Batch) -> str:
    """The list file naming every features dataset the batch's PCA may read (`pca_inputs_text`)."""
    return layout.s3_uri(batch.bucket, layout.pca_inputs_key(batch.batch_id))


def pca_inputs_text(batch: Batch) -> str:
    """The body of `pca_inputs_uri`: every committed batch's features plus this one's, one a line
    (a list file, not arguments: EMR caps a step argument at 10,280 characters)."""
    return contract.features_list_text(
        [layout.s3_uri(batch.bucket, layout.features_prefix(b)) for b in batch.pca_batches()]
    )


def write_pca_inputs(bucket, batch: Batch) -> str:
    """Write the batch's PCA inputs list to the bucket (a `fruits.storage.Bucket`) before its jobs
    run; returns its URI."""
    uri = pca_inputs_uri(batch)
    bucket.write_text(bucket.key_of(uri), pca_inputs_text(batch))
    return uri


def pca_job(
    batch: Batch,
    run_id: str,
    *,
    pca_k: int | None,
    pca_variance: float,
    refit: str = "auto",
    refit_angle: float | None = None,
) -> Job:
    """pca.py on the batch's features, merged with the previous committed run's state; with
    `refit` auto it decides itself whether to refit, and only then reads the committed features
    listed in `pca_inputs_uri(batch)`. Writes pca/run=<run_id>/."""
    features = layout.s3_uri(batch.bucket, layout.features_prefix(batch.batch_id))
    previous = pca_policy.previous_prefix(batch.pca_state)
    previous_uri = layout.s3_uri(batch.bucket, previous) if previous else None
    outputs = layout.pca_outputs(batch.bucket, run_id)
    args = contract.pca_args(
        features=features,
        outputs=outputs,
        pca_k=pca_k,
        pca_variance=pca_variance,
        previous=previous_uri,
        history_list=pca_inputs_uri(batch),
        refit=refit,
        refit_angle=refit_angle,
        space_id=layout.safe_run_id(run_id),
    )
    reads = [features, *([previous_uri] if previous_uri else []), pca_inputs_uri(batch)]
    return Job(PCA, layout.safe_run_id(run_id), args, reads=reads, writes=outputs.uris())


def pipeline_jobs(batch: Batch, run_id: str, params: dict) -> list[Job]:
    """The pipeline run's two jobs, from its Params (the trigger form's names)."""
    return [
        featurize_job(batch, weights=params["weights"], image_size=int(params["image_size"])),
        pca_job(
            batch,
            run_id,
            pca_k=params["pca_k"],
            pca_variance=params["pca_variance"],
            refit=params.get("pca_refit") or "auto",
            refit_angle=params.get("pca_refit_angle"),
        ),
    ]


def classify_job(pca_run: PcaRun, run_id: str) -> Job:
    """classify.py on a committed PCA run's vectors (every dataset its vectors list names; a run
    from before incremental PCA has one vectors folder), writing classifier/run=<run_id>/."""
    vectors = layout.pca_outputs(pca_run.bucket, pca_run.run_id).vectors
    vectors_list = layout.s3_uri(pca_run.bucket, pca_run.vectors_list) if pca_run.vectors_list else None
    outputs = layout.classifier_outputs(pca_run.bucket, run_id)
    return Job(
        CLASSIFY,
        layout.safe_run_id(run_id),
        contract.classify_args(vectors=vectors, pca_run=pca_run.run_id, outputs=outputs, vectors_list=vectors_list),
        reads=[vectors_list or vectors + "/"],
        writes=outputs.uris(),
    )


def by_name(jobs: list) -> dict[str, Job]:
    """Jobs (records or their XCom dicts) by name."""
    return {job.name: job for job in map(Job.from_xcom, jobs)}


def compute_result(
    jobs: list,
    *,
    pca_prefix: str,
    stage_seconds: dict[str, float | None],
    extra_outputs: dict[str, str] | None = None,
    details: dict | None = None,
) -> ComputeResult:
    """What a backend hands validation and the report: every output its jobs wrote, by name, plus
    what the backend adds (`extra_outputs`: EMR's logs), and the stages' seconds."""
    outputs: dict[str, str] = {}
    for job in by_name(jobs).values():
        outputs.update(job.writes)
    return ComputeResult(
        pca_prefix=pca_prefix,
        outputs={**outputs, **(extra_outputs or {})},
        stage_seconds=stage_seconds,
        details=details or {},
    )
