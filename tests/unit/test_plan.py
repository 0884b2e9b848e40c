"""fruits.plan: a run's jobs are built once, as data, and both backends run exactly them."""

from __future__ import annotations

import dataclasses
import json

from conftest import load_job
from fruits import plan
from fruits.backends.emr import steps
from fruits.contract import Batch, PcaRun

CODE = {
    "featurize": "s3://b/code/v/featurize.py",
    "pca": "s3://b/code/v/pca.py",
    "classify": "s3://b/code/v/classify.py",
    "py_files": "s3://b/code/v/fruits_spark.zip",
}
PARAMS = {
    "weights": "none",
    "image_size": 96,
    "pca_k": None,
    "pca_variance": 0.9,
    "pca_refit": None,
    "pca_refit_angle": 15.0,
}


def batch(**changes) -> Batch:
    return dataclasses.replace(
        Batch(batch_id="b2", bucket="fruits", images=3, committed_batches=["b1"], committed_features_rows=10), **changes
    )


def test_a_batch_becomes_featurize_then_pca_on_s3_uris_only():
    featurize, pca = plan.pipeline_jobs(batch(), "manual__2026-01-01T00:00:00+00:00", PARAMS)
    assert (featurize.name, featurize.script, featurize.app_name) == ("featurize", "featurize.py", "fruits-featurize")
    assert (pca.name, pca.script, pca.subject) == ("pca", "pca.py", "manual__2026-01-01T00_00_00_00_00")
    for job in (featurize, pca):
        uris = [a for a in job.args if "/" in a]
        assert uris and all(u.startswith("s3://fruits/") for u in uris), uris  # never a local copy
    parsed = load_job("featurize").parse_args(featurize.args)
    assert (parsed.manifest, parsed.output, parsed.image_size) == (
        "s3://fruits/batches/b2/manifest.jsonl",
        "s3://fruits/features/batch=b2/",
        96,
    )
    assert featurize.reads == [parsed.manifest]
    assert featurize.writes == {
        "features": "s3://fruits/features/batch=b2/",
        "rejects": "s3://fruits/rejects/batch=b2/",
    }
    parsed = load_job("pca").parse_args(pca.args)
    assert parsed.features == ["s3://fruits/features/batch=b2/"] and parsed.refit == "auto"
    assert parsed.refit_angle == 15.0 and parsed.previous is None  # no committed PCA state: fit from scratch
    assert parsed.history_list == plan.pca_inputs_uri(batch()) == "s3://fruits/batches/b2/pca_inputs.txt"
    assert pca.writes["pca"] == "s3://fruits/pca/run=manual__2026-01-01T00_00_00_00_00/"


def test_pca_merges_with_the_committed_state_and_lists_every_committed_batch():
    merged = batch(pca_state={"version": 1, "pca_prefix": "pca/run=r1/"}, committed_batches=["b1", "b2"])
    job = plan.pca_job(merged, "r2", pca_k=4, pca_variance=0.9, refit="never")
    parsed = load_job("pca").parse_args(job.args)
    assert (parsed.previous, parsed.k, parsed.refit) == ("s3://fruits/pca/run=r1/", 4, "never")
    assert job.reads == ["s3://fruits/features/batch=b2/", "s3://fruits/pca/run=r1/", parsed.history_list]
    # A retried batch (b2 already in the ledger's list) is read once.
    assert plan.pca_inputs_text(merged) == "s3://fruits/features/batch=b1/\ns3://fruits/features/batch=b2/\n"


def test_the_pca_inputs_list_is_written_where_the_job_reads_it():
    written = {}

    class Bucket:
        def key_of(self, uri):
            return uri.removeprefix("s3://fruits/")

        def write_text(self, key, text):
            written[key] = text

    assert plan.write_pca_inputs(Bucket(), batch()) == "s3://fruits/batches/b2/pca_inputs.txt"
    assert written == {"batches/b2/pca_inputs.txt": plan.pca_inputs_text(batch())}


def test_the_classifier_reads_the_runs_vectors_list():
    pca_run = PcaRun(
        bucket="fruits",
        run_id="r1",
        pca_prefix="pca/run=r1/",
        k=3,
        rows=9,
        batch_id="b1",
        source="param",
        vectors_list="pca/run=r1/vectors_list.txt",
    )
    job = plan.classify_job(pca_run, "c1")
    parsed = load_job("classify").parse_args(job.args)
    assert parsed.vectors_list == "s3://fruits/pca/run=r1/vectors_list.txt" == job.reads[0]
    assert job.writes["classifier"] == "s3://fruits/classifier/run=c1/"
    legacy = plan.classify_job(dataclasses.replace(pca_run, vectors_list=None), "c1")
    assert load_job("classify").parse_args(legacy.args).vectors == "s3://fruits/pca/run=r1/vectors"


def test_emr_submits_the_planned_jobs_as_they_are():
    for job in plan.pipeline_jobs(batch(), "r", PARAMS):
        args = steps.job_step(job, CODE)["HadoopJarStep"]["Args"]
        assert args[args.index(CODE[job.name]) + 1 :] == job.args
        assert args[args.index("--name") + 1] == job.app_name


def test_one_compute_result_from_the_jobs_and_what_the_backend_adds():
    jobs = [job.to_xcom() for job in plan.pipeline_jobs(batch(), "r", PARAMS)]
    jobs = json.loads(json.dumps(jobs))  # as XCom hands them over
    result = plan.compute_result(
        jobs,
        pca_prefix="pca/run=r/",
        stage_seconds={"featurize": 1.0, "pca": 2.0},
        extra_outputs={"emr_logs": "s3://fruits/emr-logs/j-1/"},
        details={"cluster_id": "j-1"},
    )
    assert result.outputs["features"] == "s3://fruits/features/batch=b2/"
    assert result.outputs["vectors"] == "s3://fruits/pca/run=r/vectors/"
    assert result.outputs["pca_report"] == "s3://fruits/pca/run=r/report.json"
    assert result.outputs["emr_logs"] == "s3://fruits/emr-logs/j-1/" and result.details == {"cluster_id": "j-1"}
    assert (result.pca_prefix, result.stage_seconds) == ("pca/run=r/", {"featurize": 1.0, "pca": 2.0})
