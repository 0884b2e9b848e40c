"""fruits_spark.moments and pca_model: the one-pass covariance and the eigendecomposition."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pyarrow as pa
import pytest

from fruits_spark import moments, pca_model
from fruits_spark.moments import Moments

FLOAT32 = pa.float32()


def batch_of(matrix, labels=None, type_=FLOAT32):
    rows = [None if row is None else list(row) for row in matrix]
    labels = labels or ["Apple Red 1"] * len(rows)
    return pa.array(labels, type=pa.string()), pa.array(rows, type=pa.list_(type_))


def moments_in_chunks(matrix: np.ndarray, cuts: list[int]) -> Moments:
    parts = np.split(matrix, cuts)
    return reduce(Moments.merge, (Moments.of_batch(*batch_of(p, type_=pa.float64())) for p in parts), Moments())


def test_chunked_moments_equal_numpy_mean_and_covariance():
    rng = np.random.default_rng(3)
    # Far from centred with a small spread: where a one-shot X^T X - n mean mean^T would cancel.
    matrix = 1000.0 + rng.normal(scale=0.01, size=(300, 12)) @ rng.normal(size=(12, 12))
    merged = moments_in_chunks(matrix, [7, 8, 150, 299])  # uneven chunks, one of a single row
    assert merged.rows == 300 and merged.clean and (merged.min_dim, merged.max_dim) == (12, 12)
    np.testing.assert_allclose(merged.mean, matrix.mean(axis=0), rtol=1e-13)
    expected = np.cov(matrix, rowvar=False)
    np.testing.assert_allclose(merged.covariance(), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # The order of the merges does not matter.
    np.testing.assert_allclose(
        moments_in_chunks(matrix[::-1], [100, 200]).covariance(),
        expected,
        rtol=1e-9,
        atol=1e-9 * np.abs(expected).max(),
    )


def test_bad_vectors_are_counted_and_leave_no_matrix():
    good = np.ones((3, 4))
    with_nan = [[1.0, np.nan, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    assert Moments.of_batch(*batch_of(with_nan)).bad_vectors == 1
    with_null_value = pa.array([[1.0, None, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]], type=pa.list_(pa.float32()))
    part = Moments.of_batch(pa.array(["a", "b"]), with_null_value)
    assert (part.bad_vectors, part.clean) == (1, False)
    infinite = Moments.of_batch(*batch_of([[1.0, np.inf, 0.0, 0.0]]))
    assert infinite.bad_vectors == 1
    null_vector = Moments.of_batch(*batch_of([None, [1.0] * 4]))
    assert (null_vector.null_vectors, null_vector.clean) == (1, False)
    mixed = Moments.of_batch(*batch_of([[1.0] * 4, [1.0] * 3]))
    assert (mixed.min_dim, mixed.max_dim, mixed.clean) == (3, 4, False)

    total = reduce(Moments.merge, [Moments.of_batch(*batch_of(good)), null_vector, mixed, infinite])
    assert (total.rows, total.null_vectors, total.bad_vectors) == (8, 1, 1)
    assert (total.min_dim, total.max_dim) == (3, 4)
    assert not total.clean  # one bad part spoils the sum: the job stops with the counts above


def test_parts_of_different_lengths_do_not_merge():
    a = Moments.of_batch(*batch_of(np.ones((2, 4))))
    b = Moments.of_batch(*batch_of(np.ones((2, 5))))
    merged = a.merge(b)
    assert (merged.min_dim, merged.max_dim, merged.clean) == (4, 5, False)


def test_empty_batches_are_neutral_and_labels_are_collected():
    empty = Moments.of_batch(pa.array([], type=pa.string()), pa.array([], type=pa.list_(pa.float32())))
    assert empty.rows == 0 and not empty.clean
    part = Moments.of_batch(*batch_of(np.eye(3), ["Kiwi", "Banana", "Kiwi"]))
    merged = empty.merge(part).merge(Moments())
    assert merged.labels == {"Kiwi", "Banana"} and merged.rows == 3
    np.testing.assert_array_equal(merged.mean, part.mean)


def test_record_round_trip_and_partial_merge():
    rng = np.random.default_rng(5)
    matrix = rng.normal(size=(40, 6))
    parts = [Moments.of_batch(*batch_of(chunk, type_=pa.float64())) for chunk in np.split(matrix, [10, 25])]
    parts.append(Moments.of_batch(*batch_of([None])))  # a part with a null vector travels too
    records = pa.Table.from_batches(
        [pa.RecordBatch.from_pydict(p.to_record(), schema=moments.arrow_schema()) for p in parts]
    ).to_batches(max_chunksize=2)
    [merged_batch] = list(moments.merge_partials(iter(records)))
    merged = Moments.of_row(merged_batch.to_pylist()[0])
    assert (merged.rows, merged.null_vectors, merged.clean) == (41, 1, False)
    clean = reduce(Moments.merge, [Moments.of_row(r) for b in records for r in b.to_pylist()][:3])
    np.testing.assert_allclose(clean.covariance(), np.cov(matrix, rowvar=False), rtol=1e-12, atol=1e-12)


def test_principal_components_match_svd_and_have_a_fixed_sign():
    rng = np.random.default_rng(8)
    matrix = rng.normal(size=(200, 5)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5]) @ np.linalg.qr(rng.normal(size=(5, 5)))[0]
    ratios, components = pca_model.principal_components(np.cov(matrix, rowvar=False))
    centred = matrix - matrix.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(ratios, singular**2 / np.sum(singular**2), rtol=1e-10)
    np.testing.assert_allclose(np.abs(components.T @ vt.T), np.eye(5), atol=1e-8)  # same axes
    biggest = components[np.argmax(np.abs(components), axis=0), np.arange(5)]
    assert (biggest > 0).all()
    _, flipped = pca_model.principal_components(np.cov(-matrix, rowvar=False))
    np.testing.assert_allclose(flipped, components, atol=1e-10)  # the sign rule, not luck


@pytest.mark.spark
def test_compute_merges_many_partitions_on_the_executors(local_spark):
    """Past max_partials partitions the partial matrices are merged by the executors first."""
    rng = np.random.default_rng(13)
    matrix = (3.0 + rng.normal(size=(90, 7))).astype(np.float32)
    rows = [(f"label {i % 4}", [float(v) for v in row]) for i, row in enumerate(matrix)]
    frame = local_spark.createDataFrame(rows, "label string, features array<float>").repartition(6)
    direct = moments.compute(frame)  # 6 partials, merged by the driver
    tree = moments.compute(frame, max_partials=2)  # merged by 2 executor tasks first
    expected = np.cov(matrix.astype(np.float64), rowvar=False)
    for result in (direct, tree):
        assert result.rows == 90 and result.labels == {f"label {i}" for i in range(4)}
        np.testing.assert_allclose(result.covariance(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.mean, matrix.astype(np.float64).mean(axis=0), rtol=1e-12)


@pytest.mark.spark
def test_partials_come_back_whole_with_and_without_toArrow(local_spark):
    """Spark 4 fetches the partial matrices with `toArrow`; Spark 3.5 (EMR 7.x) has no `toArrow`
    and gets them through `_collect_as_arrow`: same rows, the matrices' bytes untouched."""
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    frame = local_spark.createDataFrame(
        [("Kiwi", [float(v) for v in row]) for row in matrix], "label string, features array<float>"
    ).coalesce(1)
    partials = frame.mapInArrow(moments.partition_moments, moments.SCHEMA)

    class Spark35Frame:  # a DataFrame as PySpark 3.5 has it: no toArrow
        def _collect_as_arrow(self):
            return partials._collect_as_arrow()

    for rows in (moments.collect_as_arrow(partials), moments.collect_as_arrow(Spark35Frame())):
        [row] = rows
        assert row["rows"] == 4 and row["labels"] == ["Kiwi"]
        mean = np.frombuffer(row["mean"], dtype=np.float64)
        scatter = np.frombuffer(row["scatter"], dtype=np.float64).reshape(3, 3)
        np.testing.assert_array_equal(mean, matrix.astype(np.float64).mean(axis=0))
        np.testing.assert_allclose(scatter, np.cov(matrix.astype(np.float64), rowvar=False) * 3, rtol=1e-12)

    class NoRows:  # Spark 3.5 returns no batches at all for an empty result
        def _collect_as_arrow(self):
            return []

    assert moments.collect_as_arrow(NoRows()) == []


def test_projector_centres_and_projects_each_batch_including_empty_ones():
    class Broadcast:  # what the job hands the projector: a broadcast of (mean, basis)
        value = (np.array([1.0, 1.0, 0.0]), np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))

    def batch(rows):
        return pa.RecordBatch.from_pydict(
            {
                "path": pa.array([f"p{i}" for i in range(len(rows))], pa.string()),
                "label": pa.array(["Kiwi"] * len(rows), pa.string()),
                "features": pa.array(rows, pa.list_(pa.float32())),
            }
        )

    out = list(pca_model.projector(Broadcast())(iter([batch([]), batch([[3.0, 5.0, 9.0], [1.0, 1.0, 1.0]])])))
    assert [b.num_rows for b in out] == [0, 2]
    assert out[1].column("pca_features").to_pylist() == [[2.0, 4.0], [0.0, 0.0]]
    assert out[1].column("path").to_pylist() == ["p0", "p1"]
