"""Incremental PCA without Spark: the refit policy, the state files, and validation streamed in
bounded memory (moto's S3 through a real S3Hook)."""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits import contract, layout
from fruits.contract import Batch, PcaOutputs
from fruits.core import parquet_stream, pca_policy, pipeline, validation
from fruits.core.validation import Findings
from fruits_spark import pca_model, pca_state
from fruits_spark.moments import Moments


def family(rows: int, dim: int, seed: int, mixing_seed: int = 11) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, 4)) * np.array([6.0, 4.0, 2.0, 1.0])
    mixing = np.random.default_rng(mixing_seed).normal(size=(4, dim))
    return (np.abs(5.0 + latent @ mixing + rng.normal(scale=0.1, size=(rows, dim)))).astype(np.float32)


def features_table(matrix: np.ndarray, prefix: str) -> pa.Table:
    return pa.table(
        {
            "path": [f"s3://fruits-unit/landing/{prefix}_{i}.jpg" for i in range(len(matrix))],
            "label": ["Kiwi"] * len(matrix),
            "features": pa.array(list(matrix), type=pa.list_(pa.float32())),
            "sha256": [hashlib.sha256(row.tobytes()).hexdigest() for row in matrix],
        }
    )


def moments_of(matrix: np.ndarray) -> Moments:
    table = features_table(matrix, "m")
    return Moments.of_batch(table.column("label").combine_chunks(), table.column("features").combine_chunks())


def basis_of(matrix: np.ndarray, k: int, space: str = "s1") -> pca_state.Basis:
    stats = moments_of(matrix)
    _, components = pca_model.principal_components(stats.covariance())
    return pca_state.Basis(space, stats.mean, components[:, :k])


def decide(current, matrix, **kwargs):
    stats = moments_of(matrix)
    ratios, components = pca_model.principal_components(stats.covariance())
    options = {"k_requested": 3, "variance_target": None, **kwargs}
    return pca_state.decide(
        current=current, covariance=stats.covariance(), ratios=ratios, components=components, **options
    )


# ----------------------------------------------------------------------------- policy


def test_the_policy_refits_only_for_a_reason_it_names():
    first, more, other = family(400, 16, 1), family(100, 16, 2), family(2000, 16, 3, mixing_seed=5)
    current = basis_of(first, 3)
    same = decide(current, np.vstack([first, more]))
    assert not same.refit and same.max_angle_degrees < 10 and "projecting the new batch only" in same.reason
    moved = decide(current, np.vstack([first, other]))
    assert moved.refit and moved.max_angle_degrees > 10 and "moved" in moved.reason
    assert decide(None, first).reason == "no model yet"
    assert decide(current, first, k_requested=4).reason == "k changed from 3 to 4"
    assert decide(current, first, requested="always").reason == "requested (--refit always)"
    kept = decide(current, first, k_requested=None, variance_target=0.9999)
    assert kept.refit and "under the target 0.9999" in kept.reason and kept.k > 3
    forbidden = decide(current, np.vstack([first, other]), requested="never")
    assert not forbidden.refit and forbidden.k == 3 and "but --refit never" in forbidden.reason
    with pytest.raises(pca_state.PolicyError, match="no current model"):
        decide(None, first, requested="never")


def test_principal_angle_is_zero_for_the_same_subspace_and_90_for_an_orthogonal_one():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 4)))
    rotated = q[:, :2] @ np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    assert pca_state.max_principal_angle_degrees(q[:, :2], rotated) == pytest.approx(0.0, abs=1e-6)
    assert pca_state.max_principal_angle_degrees(q[:, :2], q[:, 2:]) == pytest.approx(90.0)


def test_state_files_round_trip_and_contents_count_once():
    stats = moments_of(family(50, 8, 1))
    back = pca_state.moments_from_bytes(pca_state.moments_to_bytes(stats))
    assert back.rows == 50 and np.array_equal(back.scatter, stats.scatter) and np.array_equal(back.mean, stats.mean)
    assert pca_state.moments_from_bytes(pca_state.moments_to_bytes(Moments())).rows == 0
    basis = basis_of(family(50, 8, 1), 2, "space-7")
    again = pca_state.basis_from_bytes(pca_state.basis_to_bytes(basis))
    assert again.space_id == "space-7" and np.array_equal(again.components, basis.components)
    hashes = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
    index = pca_state.digests(hashes[:3] + hashes[:1] + [None])
    assert len(index) == 3
    assert pca_state.digests_from_bytes(pca_state.digests_to_bytes(index)).tolist() == index.tolist()
    fresh = pca_state.novel(pca_state.digests(hashes[2:]), index)
    assert len(fresh) == 2 and len(pca_state.union(index, fresh)) == 5


def test_the_trigger_form_offers_the_refit_choices_and_default_angle_pca_py_takes():
    from conftest import load_job
    from fruits import params
    from fruits.settings import Settings

    job = load_job("pca")
    form = params.pipeline_params(Settings(), sensor_timeout_max=3600)
    outputs = PcaOutputs("s3://b/pca/run=r")
    for choice in form["pca_refit"].schema["enum"]:
        args = contract.pca_args(features="f", outputs=outputs, pca_k=3, pca_variance=0.9, refit=choice)
        assert job.parse_args(args).refit == choice
    unset = job.parse_args(contract.pca_args(features="f", outputs=outputs, pca_k=3, pca_variance=0.9))
    assert unset.refit_angle == form["pca_refit_angle"].value == pca_policy.DEFAULT_REFIT_ANGLE
    with pytest.raises(SystemExit):
        job.parse_args(contract.pca_args(features="f", outputs=outputs, pca_k=3, pca_variance=0.9) + ["--refit", "x"])


def test_pca_arguments_are_what_the_job_parses():
    from conftest import load_job

    outputs = PcaOutputs("s3://b/pca/run=r")
    args = contract.pca_args(
        features="s3://b/features/batch=b2/",
        outputs=outputs,
        pca_k=None,
        pca_variance=0.9,
        previous="s3://b/pca/run=q/",
        history_list="s3://b/batches/b2/pca_inputs.txt",
        refit="auto",
        refit_angle=12.5,
        space_id="r",
    )
    parsed = load_job("pca").parse_args(args)
    assert parsed.features == ["s3://b/features/batch=b2/"] and parsed.previous == "s3://b/pca/run=q/"
    assert (parsed.refit, parsed.refit_angle, parsed.space_id, parsed.variance) == ("auto", 12.5, "r", 0.9)
    assert parsed.history_list == "s3://b/batches/b2/pca_inputs.txt"
    assert parsed.state_dir + "/" == outputs.root
    with pytest.raises(ValueError, match="refit must be one of"):
        contract.pca_args(features="f", outputs=outputs, pca_k=3, pca_variance=0.9, refit="sometimes")


# ----------------------------------------------------------------------------- validation


def put_parquet(bucket, key: str, table: pa.Table, row_group: int = 10_000) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group)
    bucket.write_bytes(key, sink.getvalue())


def vectors_table(paths: list[str], k: int, seed: int) -> pa.Table:
    values = np.random.default_rng(seed).normal(size=(len(paths), k))
    return pa.table(
        {
            "path": paths,
            "label": ["Kiwi"] * len(paths),
            "pca_features": pa.array(list(values), type=pa.list_(pa.float64())),
        }
    )


def refitted_space(bucket, run_id: str, batches: int, rows: int, k: int = 8) -> tuple[PcaOutputs, list[str]]:
    """A refit run's output: `batches` datasets of `rows` vectors, listed; the last one is the new batch."""
    outputs = layout.pca_outputs(bucket.name, run_id)
    listed, new_paths = [], []
    for b in range(batches):
        paths = [f"s3://{bucket.name}/landing/b{b}/{i}.jpg" for i in range(rows)]
        put_parquet(
            bucket,
            bucket.key_of(outputs.vectors) + f"/batch=b{b}/part-0.parquet",
            vectors_table(paths, k, b),
            row_group=2000,
        )
        listed.append(outputs.vectors + f"/batch=b{b}/")
        new_paths = paths
    bucket.write_text(bucket.key_of(outputs.vectors_list), "".join(u + "\n" for u in listed))
    return outputs, new_paths


def validate_space(bucket, outputs, batches: int, rows: int, featured: list[str], k: int = 8):
    findings = Findings()
    report = {"rows": batches * rows, "k": k, "mode": "refit", "space_id": "s"}
    checked = validation.check_pca(
        bucket,
        outputs,
        report,
        batch_id=f"b{batches - 1}",
        committed_rows=(batches - 1) * rows,
        featured=featured,
        previous=None,
        findings=findings,
    )
    return checked, findings


def test_validation_streams_the_vectors_in_bounded_memory(bucket):
    """Ten times the committed rows, the same peak: no table of the history is ever built."""
    warm, featured = refitted_space(bucket, "run-warm", 1, rows=10)
    validate_space(bucket, warm, 1, 10, featured)  # first-call costs (imports, clients) are not the data's
    peaks = {}
    for batches in (2, 20):
        outputs, featured = refitted_space(bucket, f"run-{batches}", batches, rows=3000)
        tracemalloc.start()
        checked, findings = validate_space(bucket, outputs, batches, 3000, featured)
        peaks[batches] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert not findings.problems, findings.problems
        assert checked.rows_read == batches * 3000 and checked.datasets_read == batches
        assert checked.largest_chunk <= parquet_stream.STREAM_ROWS
    # 60,000 rows x 8 doubles held at once would be 3.8 MB more; streamed, the peak stays put.
    print("validation peaks (bytes):", peaks)
    assert peaks[20] < 1.5 * peaks[2], peaks


def test_validation_of_a_projection_reads_only_the_new_batch(bucket):
    outputs, featured = refitted_space(bucket, "run-1", 3, rows=50)
    previous = {"space_id": "s", "vectors_list": outputs.vectors_list}
    new = layout.pca_outputs(bucket.name, "run-2")
    paths = [f"s3://{bucket.name}/landing/new/{i}.jpg" for i in range(20)]
    put_parquet(bucket, bucket.key_of(new.vectors) + "/batch=b9/part-0.parquet", vectors_table(paths, 8, 9))
    old_list = bucket.read_text(bucket.key_of(outputs.vectors_list))
    bucket.write_text(bucket.key_of(new.vectors_list), old_list + new.vectors + "/batch=b9/\n")
    # A corrupt history: reading any old dataset would fail the validation.
    bucket.write_bytes(bucket.key_of(outputs.vectors) + "/batch=b0/part-0.parquet", b"not parquet")
    report = {"rows": 170, "k": 8, "mode": "project", "space_id": "s"}

    findings = Findings()
    checked = validation.check_pca(
        bucket, new, report, batch_id="b9", committed_rows=150, featured=paths, previous=previous, findings=findings
    )
    assert not findings.problems, findings.problems
    assert (checked.rows, checked.rows_read, checked.datasets_read) == (170, 20, 1)

    findings = Findings()
    validation.check_pca(
        bucket,
        new,
        {**report, "space_id": "other"},
        batch_id="b9",
        committed_rows=150,
        featured=paths[:19],
        previous=previous,
        findings=findings,
    )
    text = "; ".join(findings.problems)
    assert "projected into space 'other', the committed space is 's'" in text
    assert "does not hold exactly the batch's 19 featurized images (1 extra, 0 missing)" in text
    assert "PCA report says 170 rows, committed features rows + this batch make 169" in text


def test_validate_returns_the_pca_state_the_commit_records(bucket, monkeypatch):
    outputs, featured = refitted_space(bucket, "run-1", 1, rows=4, k=2)
    matrix = family(4, 1280, 1)
    put_parquet(
        bucket,
        layout.features_prefix("b0") + "part-0.parquet",
        features_table(matrix, "x").set_column(0, "path", pa.array(featured)),
    )
    put_parquet(
        bucket,
        layout.rejects_prefix("b0") + "part-0.parquet",
        pa.table({"path": ["s3://fruits-unit/landing/bad.jpg"], "reason": ["cannot decode image: x"]}),
    )
    bucket.write_json(
        layout.pca_prefix("run-1") + "report.json",
        {
            "rows": 4,
            "k": 2,
            "input_dim": 1280,
            "mode": "refit",
            "space_id": "run-1",
            "fitted_rows": 4,
            "explained_variance_total": 0.5,
            "refit": {"reason": "no model yet", "max_angle_degrees": None},
        },
    )
    manifest = featured + ["s3://fruits-unit/landing/bad.jpg"]
    monkeypatch.setattr(pipeline.planning, "manifest_keys", lambda b, batch_id: [b.key_of(u) for u in manifest])
    batch = Batch(batch_id="b0", bucket=bucket.name, images=5, committed_batches=[], committed_features_rows=0)
    result = pipeline.validate(bucket, batch, layout.pca_prefix("run-1"))
    assert (result["features_rows"], result["rejects_rows"], result["pca_rows"]) == (4, 1, 4)
    assert result["pca_mode"] == "refit" and result["pca_refit_reason"] == "no model yet"
    assert result["reject_reasons"] == {"cannot decode image": 1}
    state = result["pca_state"]
    assert state["pca_prefix"] == layout.pca_prefix("run-1") and state["space_id"] == "run-1"
    assert (state["k"], state["rows"], state["version"]) == (2, 4, pca_policy.STATE_VERSION)
    assert state["vectors_list"] == outputs.vectors_list and state["moments"] == outputs.moments
    assert pca_policy.previous_prefix(state) == layout.pca_prefix("run-1")


def test_the_pca_event_names_the_space_and_its_vectors_list_when_given():
    from fruits import assets

    plain = assets.pca_event_extra(bucket="b", run_id="r", pca_prefix="pca/run=r/", k=3, rows=9, batch_id="b1")
    assert "vectors_list" not in plain  # events of runs from before incremental PCA keep their shape
    extra = assets.pca_event_extra(
        bucket="b", run_id="r", pca_prefix="pca/run=r/", k=3, rows=9, batch_id="b1", pca_mode="project", space_id="s1"
    )
    assert extra == {**plain, "pca_mode": "project", "space_id": "s1", "vectors_list": "pca/run=r/vectors_list.txt"}


def test_the_run_report_says_whether_pca_refitted_and_by_how_much_the_subspace_moved():
    from fruits.core import report

    batch = Batch(batch_id="b2", bucket="fruits", images=3, committed_batches=["b1"], committed_features_rows=10)
    validation_result = {
        "features_rows": 3,
        "rejects_rows": 0,
        "features_total": 13,
        "pca_rows": 13,
        "features_dim": 1280,
        "pca_k": 4,
        "explained_variance_total": 0.9,
        "pca_mode": "project",
        "pca_refit_reason": "the top-4 subspace moved 2.50 degrees (threshold 10.0): projecting the new batch only",
        "pca_max_angle_degrees": 2.5,
        "pca_space_id": "s1",
    }
    built = report.build(
        run_id="r", batch=batch, validation=validation_result, outputs={}, stage_seconds={}, compute="local", params={}
    )
    assert (built["pca_mode"], built["pca_max_angle_degrees"], built["pca_space_id"]) == ("project", 2.5, "s1")
    text = report.render(built)
    assert "project (subspace moved 2.50 deg)" in text and "projecting the new batch only" in text


def test_digests_keep_the_sha256_prefix_even_with_trailing_zero_bytes():
    """numpy's S16 strips trailing NUL bytes from one element: the hex goes through the raw buffer."""
    hashes = ["ab" * 15 + "00" + "ff" * 16, "00" * 16 + "11" * 16]
    assert pca_state.to_hex(pca_state.digests(hashes)) == sorted(h[:32] for h in hashes)
