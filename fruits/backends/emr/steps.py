"""The clusters' steps (command-runner.jar `spark-submit` of featurize.py, then pca.py, on s3://
URIs, arguments from fruits.contract; classify.py on the classifier DAG's cluster) and their
timings from EMR's own timelines."""

from __future__ import annotations

from fruits import contract, layout
from fruits.contract import Batch, PcaRun

# EMR's limit on one step argument (HadoopJarStepConfig.Args members, XmlString max 10280).
MAX_STEP_ARG = 10280


def spark_submit_step(*, name: str, app_name: str, script: str, py_files: str, job_args: list[str]) -> dict:
    """A command-runner.jar step that runs `spark-submit` in YARN cluster mode on the cluster."""
    args = ["spark-submit", "--deploy-mode", "cluster", "--name", app_name, "--py-files", py_files,
            script, *[str(a) for a in job_args]]
    too_long = [a[:80] + "..." for a in args if len(a) > MAX_STEP_ARG]
    if too_long:
        raise ValueError(f"step {name!r}: an argument exceeds EMR's {MAX_STEP_ARG} characters: {too_long}")
    # CONTINUE: a failed step leaves the cluster to the DAG's teardown task, which terminates it.
    return {"Name": name[:256], "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def featurize_step(*, code: dict[str, str], batch: Batch, weights: str, image_size: int) -> dict:
    """featurize.py on the batch's manifest in S3, writing straight to the batch's prefixes."""
    return spark_submit_step(
        name=f"fruits featurize {batch.batch_id}", app_name="fruits-featurize", script=code["featurize"],
        py_files=code["py_files"],
        job_args=contract.featurize_args(
            manifest=layout.s3_uri(batch.bucket, layout.manifest_key(batch.batch_id)),
            outputs=layout.featurize_outputs(batch.bucket, batch.batch_id),
            weights=weights, image_size=image_size,
            model_cache=layout.s3_uri(batch.bucket, layout.MODEL_CACHE_PREFIX)))


def pca_inputs_uri(batch: Batch) -> str:
    """The list file naming every features dataset the batch's PCA reads (written by the DAG)."""
    return layout.s3_uri(batch.bucket, layout.pca_inputs_key(batch.batch_id))


def pca_step(*, code: dict[str, str], batch: Batch, run_id: str, pca_k: int | None, pca_variance: float,
             refit: str = "auto", refit_angle: float | None = None) -> dict:
    """pca.py on the batch's features, merged with the previous committed run's state; it decides
    itself whether to refit (`refit` auto) and only then reads the committed features listed in
    `pca_inputs_uri(batch)`. Writes to pca/run=<run_id>/."""
    from fruits.core import pca_policy

    previous = pca_policy.previous_prefix(getattr(batch, "pca_state", None))
    return spark_submit_step(
        name=f"fruits pca {layout.safe_run_id(run_id)}", app_name="fruits-pca", script=code["pca"],
        py_files=code["py_files"],
        job_args=contract.pca_args(features=layout.s3_uri(batch.bucket, layout.features_prefix(batch.batch_id)),
                                   outputs=layout.pca_outputs(batch.bucket, run_id),
                                   pca_k=pca_k, pca_variance=pca_variance,
                                   previous=layout.s3_uri(batch.bucket, previous) if previous else None,
                                   history_list=pca_inputs_uri(batch), refit=refit, refit_angle=refit_angle,
                                   space_id=layout.safe_run_id(run_id)))


def classify_step(*, code: dict[str, str], pca_run: PcaRun, run_id: str) -> dict:
    """classify.py on a committed PCA run's vectors, writing to classifier/run=<run_id>/."""
    pca_outputs = layout.pca_outputs(pca_run.bucket, pca_run.run_id)
    return spark_submit_step(
        name=f"fruits classify {layout.safe_run_id(run_id)}", app_name="fruits-classify", script=code["classify"],
        py_files=code["py_files"],
        job_args=contract.classify_args(
            vectors=pca_outputs.vectors, pca_run=pca_run.run_id,
            vectors_list=layout.s3_uri(pca_run.bucket, pca_run.vectors_list) if pca_run.vectors_list else None,
            outputs=layout.classifier_outputs(pca_run.bucket, run_id)))


def _seconds(timeline: dict, start: str, end: str) -> float | None:
    if timeline.get(start) is None or timeline.get(end) is None:
        return None
    return round((timeline[end] - timeline[start]).total_seconds(), 2)


def step_seconds(describe_step: dict) -> float | None:
    """Run time of a step (DescribeStep's Timeline StartDateTime -> EndDateTime)."""
    return _seconds(describe_step["Step"]["Status"].get("Timeline", {}), "StartDateTime", "EndDateTime")


def startup_seconds(describe_cluster: dict) -> float | None:
    """Provisioning + bootstrap time of the cluster (CreationDateTime -> ReadyDateTime)."""
    return _seconds(describe_cluster["Cluster"]["Status"].get("Timeline", {}), "CreationDateTime", "ReadyDateTime")
