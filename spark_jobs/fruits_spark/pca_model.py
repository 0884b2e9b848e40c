"""From a covariance matrix to principal components, a Spark ML model, and projected vectors.

The fitted model is a Spark ML `PipelineModel` (StandardScalerModel that subtracts the mean,
then PCAModel), the same object `Pipeline([StandardScaler(withMean=True, withStd=False), PCA])`
would fit, so users load it with `PipelineModel.load` and apply it to new features in Spark.
The job's own output is projected per Arrow batch with one matrix product instead: Spark ML's
row-by-row transform (array_to_vector, centring, PCAModel, vector_to_array) is about four times
slower (docs/measurements.md).
"""

from __future__ import annotations

import numpy as np

# Rows per Arrow batch sent to the Python workers (Spark's default: 10,000), unless spark-submit
# sets spark.sql.execution.arrow.maxRecordsPerBatch. A worker waits for its first whole batch
# before it computes, and the JVM's row-to-Arrow conversion of 10,000 x 1280 floats takes about
# a second: smaller batches shorten that wait in every task. 2,500 rows (12.8 MB at d = 1280)
# measured fastest (docs/measurements.md).
ARROW_BATCH_ROWS = 2500
# The session settings pca.py starts with where spark-submit gives none (`unless_submitted`);
# the bench's Spark floor under the job starts with the same.
SESSION_DEFAULTS = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS)}


def principal_components(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(explained variance ratios, components as columns), largest variance first.

    Same quantities as Spark ML's PCA (`explainedVariance` = eigenvalue / sum of eigenvalues)
    and scikit-learn's `explained_variance_ratio_`. Each component's sign is fixed so that its
    largest-magnitude entry is positive: an eigenvector's sign is arbitrary, and without a rule
    two runs on the same data could mirror the plots and the vectors.
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)  # rounding can leave tiny negatives
    components = eigenvectors[:, order]
    return explained_ratios(eigenvalues), orient(components)


def explained_ratios(eigenvalues: np.ndarray) -> np.ndarray:
    total = float(np.sum(eigenvalues))
    return eigenvalues / total if total > 0 else np.zeros_like(eigenvalues)


def orient(components: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude entry is positive."""
    rows = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[rows, np.arange(components.shape[1])])
    return components * np.where(signs == 0, 1.0, signs)


def fit_with_spark_ml(centred_vectors, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ratios, components) from Spark ML's own `PCA.fit` on centred vectors ("centred" column).

    Kept as `--solver spark-ml`: the reference the default solver is tested against, and an
    option for whoever prefers Spark ML's code path to speed. Fits all `dim` components to get
    the whole spectrum.
    """
    from pyspark.ml.feature import PCA

    model = PCA(k=dim, inputCol="centred", outputCol="pca").fit(centred_vectors)
    components = model.pc.toArray()
    return np.asarray(model.explainedVariance.toArray()), orient(components)


def spark_ml_pipeline(
    spark, mean: np.ndarray, components: np.ndarray, ratios, *, input_col: str = "vector", output_col: str = "pca"
):
    """A Spark ML PipelineModel (centring, then projection on `components`' k columns);
    `ratios` (a sequence, at least k long) become the PCAModel's explained variance.

    Spark ML has no public constructor for fitted models, so this builds the JVM objects the
    estimators would have returned (their constructors are public in the bytecode, stable since
    Spark 2.0) and wraps them in the PySpark classes: saved, they load like any fitted pipeline.
    """
    from pyspark.ml import PipelineModel
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCAModel, StandardScalerModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    jvm = sc._jvm.org.apache.spark.ml.feature
    dim, k = components.shape

    def java(value):
        return _py2java(sc, value)

    scaler = StandardScalerModel(
        jvm.StandardScalerModel(
            StandardScalerModel._randomUID(), java(DenseVector(np.ones(dim))), java(DenseVector(mean))
        )
    )
    scaler._set(withMean=True, withStd=False, inputCol=input_col, outputCol="centred")
    pca = PCAModel(
        jvm.PCAModel(
            PCAModel._randomUID(), java(DenseMatrix(dim, k, components.ravel(order="F"))), java(DenseVector(ratios[:k]))
        )
    )
    pca._set(k=k, inputCol="centred", outputCol=output_col)
    return PipelineModel([scaler, pca])


def projector(bc_basis):
    """mapInArrow function: (path, label, features[, batch]) -> (path, label, pca_features[, batch]).

    `bc_basis` is a broadcast (mean, components d x k): each batch is one matrix product. A
    `batch` column (which dataset the row came from) is passed through.
    """

    def project(batches):
        import pyarrow as pa

        mean, components = bc_basis.value
        k = components.shape[1]
        for batch in batches:
            features = batch.column("features")
            rows = len(features)
            matrix = np.asarray(features.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
            projected = (matrix.reshape(rows, len(mean)) - mean) @ components  # rows may be 0
            offsets = pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32))
            columns = [
                batch.column("path"),
                batch.column("label"),
                pa.ListArray.from_arrays(offsets, pa.array(projected.ravel())),
            ]
            names = ["path", "label", "pca_features"]
            if "batch" in batch.schema.names:
                columns.append(batch.column("batch"))
                names.append("batch")
            yield pa.RecordBatch.from_arrays(columns, names=names)

    return project


PROJECTED_SCHEMA = "path string, label string, pca_features array<double>"
PROJECTED_BATCH_SCHEMA = PROJECTED_SCHEMA + ", batch string"  # partitioned by batch on write

# Columns of PROJECTED_SCHEMA that Parquet should not try to dictionary-encode. Parquet starts
# every column with a dictionary and drops it once it does not pay (too large, or no smaller
# after the first page), re-encoding what it buffered: wasted work for unique paths and
# continuous doubles, whose files come out plain either way (a faster write, same files:
# docs/measurements.md). The labels keep theirs: few values, and readers filter on it.
PLAIN_COLUMNS = ("path", "pca_features.list.element")


def projected_writer(projected):
    """`projected.write` in overwrite mode, with no dictionary for `PLAIN_COLUMNS`."""
    writer = projected.write.mode("overwrite")
    for column in PLAIN_COLUMNS:
        writer = writer.option(f"parquet.enable.dictionary#{column}", "false")
    return writer
