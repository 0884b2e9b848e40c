"""The PCA job's parts that need no Spark session: its input checks (fruits_spark.pca_fit), the
order of the batches it reports and the state files it leaves (fruits_spark.pca_outputs)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fruits_spark import pca_fit, pca_outputs, pca_state
from fruits_spark.moments import Moments
from fruits_spark.runtime import JobError


def clean(rows: int = 5, dim: int = 3) -> Moments:
    matrix = np.random.default_rng(rows).normal(size=(rows, dim))
    centred = matrix - matrix.mean(axis=0)
    return Moments(
        rows=rows, min_dim=dim, max_dim=dim, labels={"Kiwi"}, mean=matrix.mean(axis=0), scatter=centred.T @ centred
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(rows=0, mean=None, scatter=None), "the features input is empty (0 rows): nothing to fit"),
        (dict(null_vectors=2, scatter=None), "2 of 5 rows have no features vector"),
        (dict(min_dim=2, scatter=None), "features vectors have mixed lengths: from 2 to 3 values"),
        (dict(bad_vectors=1, scatter=None), "1 of 5 features vectors contain NaN, infinite or null values"),
        (dict(min_dim=0, max_dim=0), "features vectors are empty (0 values)"),
    ],
)
def test_the_fit_refuses_bad_input_in_one_line(change, message):
    with pytest.raises(JobError) as failed:
        pca_fit.check(dataclasses.replace(clean(), **change))
    assert str(failed.value) == message


def test_clean_moments_give_rows_and_dimension_and_a_missing_matrix_is_a_bug():
    assert pca_fit.check(clean(7, 4)) == (7, 4)
    with pytest.raises(RuntimeError):
        pca_fit.check(dataclasses.replace(clean(), scatter=None))


def test_spectrum_of_the_batched_solver_is_sorted_and_sums_to_one():
    ratios, components = pca_fit.fit(None, clean(50, 4), "batched")
    assert ratios.sum() == pytest.approx(1.0) and list(ratios) == sorted(ratios, reverse=True)
    assert np.allclose(components.T @ components, np.eye(4))


def test_batches_are_reported_in_the_inputs_order_then_by_name_and_empty_ones_left_out():
    counts = {"b9": 3, "input": 2, "b1": 4, "b5": 0, "a0": 1}
    assert list(pca_outputs.in_order(counts, ["b1", "b9", "b5"])) == ["b1", "b9", "a0", "input"]
    assert pca_outputs.in_order(counts, []) == {"a0": 1, "b1": 4, "b9": 3, "input": 2}


def test_the_state_files_are_what_the_next_run_reads_back():
    stats = clean(6, 3)
    basis = pca_state.Basis("space-1", stats.mean, np.eye(3)[:, :2])
    contents = pca_state.digests(["ab" * 32, "cd" * 32])
    files = pca_outputs.state_files(stats, basis, contents, ["s3://b/v/batch=1/", "s3://b/v/batch=2/"])
    assert set(files) == {pca_state.MOMENTS, pca_state.BASIS, pca_state.CONTENTS, pca_state.VECTORS_LIST}
    assert pca_state.moments_from_bytes(files[pca_state.MOMENTS]).rows == 6
    assert pca_state.basis_from_bytes(files[pca_state.BASIS]).space_id == "space-1"
    assert pca_state.digests_from_bytes(files[pca_state.CONTENTS]).tolist() == contents.tolist()
    assert pca_state.vectors_list_lines(files[pca_state.VECTORS_LIST].decode()) == [
        "s3://b/v/batch=1/",
        "s3://b/v/batch=2/",
    ]
    empty = pca_outputs.state_files(Moments(), None, pca_state.empty_digests(), [])
    assert pca_state.basis_from_bytes(empty[pca_state.BASIS]) is None  # no space yet
