"""Row count, mean and covariance of a features column in one distributed pass.

Why not `pyspark.ml.feature.PCA.fit`: Spark ML builds the covariance (`RowMatrix.computeCovariance`)
by adding each row as a rank-1 update of a packed d x d matrix (BLAS level 2, `spr`). For
d = 1280 that streams the whole 6.5 MB matrix through memory once per row, which makes the fit
memory-bound, many times slower than one numpy process (docs/measurements.md).
Here every Arrow batch (up to `spark.sql.execution.arrow.maxRecordsPerBatch` rows) becomes one
matrix product (BLAS level 3), and the per-batch results merge exactly:

  batch:  n, mean, S = sum over rows of (x - mean)(x - mean)^T      (centred per batch: no
  merge:  S = S_a + S_b + (mean_b - mean_a)(mean_b - mean_a)^T n_a n_b / n   cancellation)

(Chan, Golub & LeVeque's pairwise update.) The same pass validates the input, so a bad row
costs no extra scan: null vectors, mixed lengths, NaN / infinite / null values, and it counts
the distinct labels for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# mapInArrow output: one row per partition, the matrices as raw float64 bytes.
SCHEMA = (
    "rows long, null_vectors long, bad_vectors long, min_dim long, max_dim long, "
    "labels array<string>, mean binary, scatter binary"
)


MAX_PARTIALS = 16  # partial results the driver merges itself (see `compute`)


def arrow_schema():
    """`SCHEMA` for pyarrow (explicit: a column of None alone would be inferred as type null)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("rows", pa.int64()),
            ("null_vectors", pa.int64()),
            ("bad_vectors", pa.int64()),
            ("min_dim", pa.int64()),
            ("max_dim", pa.int64()),
            ("labels", pa.list_(pa.string())),
            ("mean", pa.binary()),
            ("scatter", pa.binary()),
        ]
    )


@dataclass
class Moments:
    """What one pass over (label, features) learns; `merge` combines two disjoint parts."""

    rows: int = 0
    null_vectors: int = 0  # rows whose features vector is null
    bad_vectors: int = 0  # rows whose vector holds NaN, infinite or null values
    min_dim: int | None = None
    max_dim: int | None = None
    labels: set[str] = field(default_factory=set)
    # Set only while every row so far is usable and of one length: the job stops otherwise.
    mean: np.ndarray | None = None
    scatter: np.ndarray | None = None  # sum of outer products of the centred rows

    @property
    def clean(self) -> bool:
        return self.rows > 0 and self.scatter is not None

    def covariance(self) -> np.ndarray:
        """Sample covariance (divided by n - 1, as Spark ML and numpy.cov do)."""
        return self.scatter / max(self.rows - 1, 1)

    def merge(self, other: Moments) -> Moments:
        if not other.rows:
            return self
        if not self.rows:
            return other
        rows = self.rows + other.rows
        mean = scatter = None
        if self.clean and other.clean and self.mean.shape == other.mean.shape:
            delta = other.mean - self.mean
            scatter = self.scatter + other.scatter
            scatter += np.outer(delta, delta) * (self.rows * other.rows / rows)
            mean = self.mean + delta * (other.rows / rows)
        return Moments(
            rows=rows,
            null_vectors=self.null_vectors + other.null_vectors,
            bad_vectors=self.bad_vectors + other.bad_vectors,
            min_dim=_optional(min, self.min_dim, other.min_dim),
            max_dim=_optional(max, self.max_dim, other.max_dim),
            labels=self.labels | other.labels,
            mean=mean,
            scatter=scatter,
        )

    @classmethod
    def of_batch(cls, labels, features) -> Moments:
        """Moments of one Arrow batch: `labels` a string array, `features` a list array."""
        import pyarrow.compute as pc

        rows = len(features)
        lengths = pc.list_value_length(features)
        dims = pc.min_max(lengths)
        part = cls(
            rows=rows,
            null_vectors=features.null_count,
            min_dim=dims["min"].as_py(),
            max_dim=dims["max"].as_py(),
            labels=set(pc.unique(labels).drop_null().to_pylist()),
        )
        if rows == 0 or part.null_vectors or part.min_dim != part.max_dim:
            return part  # nothing usable to add up (the job reports why)
        # Null values become NaN here, so they count as bad like NaN and infinities do.
        # A copy always (float32 input is converted anyway; float64 input would be Arrow's read-only buffer).
        matrix = np.array(features.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        matrix = matrix.reshape(rows, part.max_dim)
        part.bad_vectors = int(rows - np.isfinite(matrix).all(axis=1).sum())
        if part.bad_vectors:
            return part
        part.mean = matrix.mean(axis=0)
        matrix -= part.mean
        part.scatter = matrix.T @ matrix
        return part

    def to_record(self) -> dict:
        return {
            "rows": [self.rows],
            "null_vectors": [self.null_vectors],
            "bad_vectors": [self.bad_vectors],
            "min_dim": [self.min_dim],
            "max_dim": [self.max_dim],
            "labels": [sorted(self.labels)],
            "mean": [None if self.mean is None else self.mean.tobytes()],
            "scatter": [None if self.scatter is None else self.scatter.tobytes()],
        }

    @classmethod
    def of_row(cls, row) -> Moments:
        """Back from a row of `SCHEMA` (a Spark Row or a dict, after an Arrow round trip)."""
        mean = scatter = None
        if row["mean"] is not None and row["scatter"] is not None:
            mean = np.frombuffer(row["mean"], dtype=np.float64).copy()
            scatter = np.frombuffer(row["scatter"], dtype=np.float64).reshape(len(mean), len(mean)).copy()
        return cls(
            rows=row["rows"],
            null_vectors=row["null_vectors"],
            bad_vectors=row["bad_vectors"],
            min_dim=row["min_dim"],
            max_dim=row["max_dim"],
            labels=set(row["labels"] or ()),
            mean=mean,
            scatter=scatter,
        )


def _optional(pick, a, b):
    return b if a is None else a if b is None else pick(a, b)


def partition_moments(batches):
    """mapInArrow function: the moments of one partition of (label, features) as a single row."""
    import pyarrow as pa

    total = Moments()
    for batch in batches:
        total = total.merge(Moments.of_batch(batch.column("label"), batch.column("features")))
    yield pa.RecordBatch.from_pydict(total.to_record(), schema=arrow_schema())


def merge_partials(batches):
    """mapInArrow function: rows of `SCHEMA` merged into one."""
    import pyarrow as pa

    total = Moments()
    for batch in batches:
        for record in batch.to_pylist():
            total = total.merge(Moments.of_row(record))
    yield pa.RecordBatch.from_pydict(total.to_record(), schema=arrow_schema())


def compute(frame, max_partials: int = MAX_PARTIALS) -> Moments:
    """Moments of `frame` (columns label, features), in one scan of it.

    Each partition sends one d x d matrix. Past `max_partials` partitions they are first
    merged on the executors, in `max_partials` groups, so the driver never receives more
    than that many matrices (16 x 13 MB for d = 1280).
    """
    from functools import reduce

    partials = frame.select("label", "features").mapInArrow(partition_moments, SCHEMA)
    if partials.rdd.getNumPartitions() > max_partials:
        partials = partials.repartition(max_partials).mapInArrow(merge_partials, SCHEMA)
    return reduce(Moments.merge, map(Moments.of_row, collect_as_arrow(partials)), Moments())


def collect_as_arrow(frame, schema=None) -> list[dict]:
    """The rows of a small `frame` as dicts, fetched as Arrow rather than with `collect()`;
    `schema` (pyarrow) is the frame's, `SCHEMA`'s by default.

    `collect()` pickles a binary value on the JVM side one character at a time (Pyrolite): for
    the two 13 MB matrices of a 100,000 x 1280 scan that costs most of a second; Arrow copies
    them whole.
    `toArrow` is public since Spark 4.0; Spark 3.5 (EMR 7.x) has the same as `_collect_as_arrow`.
    """
    import pyarrow as pa

    if hasattr(frame, "toArrow"):
        return frame.toArrow().to_pylist()
    # Spark 3.5's batches carry the JVM's nullability (`count` of a groupBy is "not null"), which
    # `schema` need not share: take each batch as it comes; rows as dicts do not depend on it.
    batches = frame._collect_as_arrow()
    if not batches:
        return pa.Table.from_batches([], schema=schema or arrow_schema()).to_pylist()
    return pa.Table.from_batches(batches).to_pylist()
