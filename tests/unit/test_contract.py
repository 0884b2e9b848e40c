"""fruits.contract: the DAG and the jobs agree on arguments, output names and records."""

from __future__ import annotations

import json

import pytest

from conftest import load_job
from fruits import contract, layout
from fruits.contract import Batch, ComputeResult, FeaturizeOutputs, PcaOutputs
from fruits_spark import interface


def test_featurize_arguments_are_what_the_job_parses():
    args = contract.featurize_args(
        manifest="/w/manifest.txt", outputs=FeaturizeOutputs("/w/f", "/w/r"), weights="none", image_size=96
    )
    parsed = load_job("featurize").parse_args(args)
    assert (parsed.manifest, parsed.output, parsed.rejects, parsed.weights, parsed.image_size) == (
        "/w/manifest.txt",
        "/w/f",
        "/w/r",
        "none",
        96,
    )


@pytest.mark.parametrize("pca_k, pca_variance, expected", [(None, 0.9, (None, 0.9)), (5, 0.9, (5, None))])
def test_pca_arguments_are_what_the_job_parses(pca_k, pca_variance, expected):
    outputs = PcaOutputs("s3://b/pca/run=r")
    args = contract.pca_args(
        features="s3://b/features/batch=b1/",
        outputs=outputs,
        pca_k=pca_k,
        pca_variance=pca_variance,
        history_list="s3://b/batches/b1/pca_inputs.txt",
    )
    parsed = load_job("pca").parse_args(args)
    assert (parsed.k, parsed.variance) == expected and parsed.allow_empty and parsed.features_list is None
    assert parsed.history_list == "s3://b/batches/b1/pca_inputs.txt" and parsed.previous is None
    assert (parsed.output, parsed.model, parsed.report) == (outputs.vectors, outputs.model, outputs.report)


def test_pca_output_names_are_the_jobs_own():
    outputs = PcaOutputs("s3://b/pca/run=r")
    assert outputs.root == "s3://b/pca/run=r/"
    assert outputs.vectors == "s3://b/pca/run=r/vectors" and outputs.model == "s3://b/pca/run=r/model"
    assert (
        outputs.plots
        == interface.plot_uris(outputs.report)
        == {"scree": "s3://b/pca/run=r/report_scree.png", "scatter": "s3://b/pca/run=r/report_scatter.png"}
    )
    assert outputs.uris()["pca"] == outputs.root
    assert (
        layout.pca_outputs("b", "manual__2026-01-01T00:00:00+00:00").root
        == "s3://b/pca/run=manual__2026-01-01T00_00_00_00_00/"
    )


def test_a_features_list_has_one_location_a_line_and_no_line_breaks_inside():
    assert contract.features_list_text(["/w/f/batch=b1", "s3://b/f/batch=b2/"]) == "/w/f/batch=b1\ns3://b/f/batch=b2/\n"
    with pytest.raises(ValueError, match="line break"):
        contract.features_list_text(["s3://b/x\ns3://other/secret"])


def test_records_survive_xcom_as_plain_json():
    batch = Batch(
        batch_id="b2",
        bucket="fruits",
        images=3,
        committed_batches=["b1", "b2"],
        committed_features_rows=10,
        seconds=0.5,
    )
    value = json.loads(json.dumps(batch.to_xcom()))
    assert Batch.from_xcom(value) == batch and Batch.from_xcom(batch) is batch
    assert batch.pca_batches() == ["b1", "b2"]  # a retried batch is never read twice
    result = ComputeResult(
        pca_prefix="pca/run=r/", outputs={"pca": "s3://fruits/pca/run=r/"}, stage_seconds={"pca": 1.0}
    )
    assert ComputeResult.from_xcom(json.loads(json.dumps(result.to_xcom()))) == result
    with pytest.raises(TypeError):
        Batch.from_xcom({"batch_id": "b1"})  # an incomplete record is an error, not a default
