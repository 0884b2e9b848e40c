"""A fruit classifier on PCA vectors with Spark ML: the split, the fits, the saved model.

The split is a function of each image's path alone, a hash bucket in [0, 100): an image stays
on the same side of the train/test split (and of the validation split inside the training
part) when images are added or the vectors are recomputed, so a later run never tests on an
image an earlier model was trained on. Spark's `xxhash64` gives the same value on Spark 3.5
and 4.x, on the driver and on every executor.

The model is a Spark ML `PipelineModel`: StringIndexer (label -> index; the labels in
alphabetical order), multinomial LogisticRegression, IndexToString (index -> label name). It
reads a `features` vector column (`array_to_vector("pca_features")`, as the PCA model reads
`array_to_vector("features")`) and writes `prediction`, the label name. The indexer skips
itself when the input has no `label` column, so the model also scores unlabelled images.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fruits_spark import hadoop_fs, interface
from fruits_spark.runtime import JobError

# Outputs under the job's --output folder (the DAG's classifier/run=<run_id>/).
MODEL = interface.CLASSIFIER_MODEL
METRICS = interface.CLASSIFIER_METRICS
CONFUSION_PNG = interface.CLASSIFIER_CONFUSION_PNG
PREDICTIONS = interface.CLASSIFIER_PREDICTIONS
INPUT_COLUMNS = interface.PCA_COLUMNS  # what pca.py writes

# Salts of the two hash splits: different salts make the validation bucket independent of the
# test bucket. Changing one would move images across sides: they are part of the contract.
TEST_SALT = "fruits-classifier-test"
VALIDATION_SALT = "fruits-classifier-validation"
TEST, VALIDATION, FIT = "test", "validation", "fit"
TRAINING_PARTS = (VALIDATION, FIT)

# Rows per partition of the cached training data. Each L-BFGS iteration is one Spark job, so on
# small inputs the per-task overhead dominates and fewer partitions fit faster (figures in
# docs/measurements.md); 50,000 rows of k = 100 doubles are 40 MB, still a small task.
ROWS_PER_PARTITION = 50_000


@dataclass(frozen=True)
class Setting:
    """One point of the regularisation grid (Spark ML's LogisticRegression parameters)."""

    reg_param: float
    elastic_net_param: float

    def as_dict(self) -> dict[str, float]:
        return {"reg_param": self.reg_param, "elastic_net_param": self.elastic_net_param}


def output_uris(output: str) -> dict[str, str]:
    """Where the job writes each of its outputs under its --output folder."""
    names = {"model": MODEL, "predictions": PREDICTIONS, "metrics": METRICS, "confusion_matrix": CONFUSION_PNG}
    return {key: f"{output}/{name}" for key, name in names.items()}


def hash_bucket(path: Column, salt: str) -> Column:
    """The path's bucket in [0, 100): `pmod(xxhash64(salt, path), 100)`."""
    return F.pmod(F.xxhash64(F.lit(salt), path), F.lit(100))


def split_part(path: Column, test_percent: int, validation_percent: int) -> Column:
    """The part of each path, "test", "validation" or "fit": test first, then validation inside
    the training part (its own hash, so the two splits are independent)."""
    return (
        F.when(hash_bucket(path, TEST_SALT) < test_percent, F.lit(TEST))
        .when(hash_bucket(path, VALIDATION_SALT) < validation_percent, F.lit(VALIDATION))
        .otherwise(F.lit(FIT))
    )


def read_vectors(spark, uri: str | list[str]) -> DataFrame:
    """The PCA vectors (path, label, pca_features) of one dataset or of several (a PCA space's
    per-batch datasets), or a JobError saying what is wrong."""
    from pyspark.errors import AnalysisException

    uris = [uri] if isinstance(uri, str) else list(uri)
    if not uris:
        raise JobError("no vectors datasets to read")
    for one in uris:
        if not hadoop_fs.exists(spark, one):
            raise JobError(f"vectors not found: {one}")
    where = ", ".join(uris[:3]) + (f" (+{len(uris) - 3} more)" if len(uris) > 3 else "")
    try:
        frame = spark.read.parquet(*uris)
    except AnalysisException as exc:  # e.g. a folder without parquet files: no schema to infer
        raise JobError(f"cannot read the vectors {where}: {str(exc).splitlines()[0]}") from None
    missing = set(INPUT_COLUMNS) - set(frame.columns)
    if missing:
        raise JobError(f"vectors input lacks column(s) {sorted(missing)}: {where}")
    return frame.select(*INPUT_COLUMNS)


@dataclass(frozen=True)
class InputStats:
    rows: int
    unlabelled: int
    distinct_paths: int
    null_vectors: int
    bad_vectors: int
    min_dim: int | None
    max_dim: int | None


def inspect(frame: DataFrame) -> InputStats:
    """One aggregation over the input: counts the checks need, nothing collected row by row."""
    vector = F.col("pca_features")
    bad = F.exists(vector, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    row = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("label").isNull(), 1).otherwise(0)).alias("unlabelled"),
        F.countDistinct("path").alias("distinct_paths"),
        F.sum(F.when(vector.isNull(), 1).otherwise(0)).alias("null_vectors"),
        F.sum(F.when(bad, 1).otherwise(0)).alias("bad_vectors"),
        F.min(F.size(vector)).alias("min_dim"),
        F.max(F.size(vector)).alias("max_dim"),
    ).first()
    return InputStats(
        rows=row.rows,
        unlabelled=row.unlabelled or 0,
        distinct_paths=row.distinct_paths,
        null_vectors=row.null_vectors or 0,
        bad_vectors=row.bad_vectors or 0,
        min_dim=row.min_dim,
        max_dim=row.max_dim,
    )


def check(stats: InputStats, uri: str) -> int:
    """The vectors' dimension, or a JobError for input no classifier can be trained on."""
    if not stats.rows:
        raise JobError(f"the vectors input is empty (0 rows): nothing to classify: {uri}")
    if stats.unlabelled == stats.rows:
        raise JobError(f"none of the {stats.rows} vectors has a label: nothing to learn from")
    if stats.distinct_paths != stats.rows:
        raise JobError(
            f"{stats.rows - stats.distinct_paths} duplicate path(s) among {stats.rows} vectors: "
            "each image must appear once"
        )
    if stats.null_vectors:
        raise JobError(f"{stats.null_vectors} of {stats.rows} rows have no pca_features vector")
    if stats.min_dim != stats.max_dim:
        raise JobError(f"pca_features vectors have mixed lengths: from {stats.min_dim} to {stats.max_dim} values")
    if not stats.max_dim:
        raise JobError("pca_features vectors are empty (0 values)")
    if stats.bad_vectors:
        raise JobError(f"{stats.bad_vectors} of {stats.rows} pca_features vectors contain NaN, infinite or null values")
    return stats.max_dim


def prepare(frame: DataFrame, test_percent: int, validation_percent: int, rows: int, slots: int) -> DataFrame:
    """The labelled rows (about `rows`) with their `features` vector and split `part`, cached
    for the fits in as few partitions as their size allows (at most one per task slot)."""
    from pyspark.ml.functions import array_to_vector

    partitions = max(1, min(slots, -(-rows // ROWS_PER_PARTITION)))
    labelled = frame.where(F.col("label").isNotNull()).select(
        "path",
        "label",
        array_to_vector("pca_features").alias("features"),
        split_part(F.col("path"), test_percent, validation_percent).alias("part"),
    )
    return labelled.repartition(partitions).cache()


def count_parts(prepared: DataFrame) -> dict[str, dict[str, int]]:
    """{part: {label: rows}} for the three parts (a part without rows is an empty dict)."""
    counts: dict[str, dict[str, int]] = {TEST: {}, VALIDATION: {}, FIT: {}}
    for row in prepared.groupBy("part", "label").count().collect():
        counts[row.part][row.label] = row["count"]
    return counts


def merge_counts(*parts: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for label, count in part.items():
            merged[label] = merged.get(label, 0) + count
    return merged


def fit_indexer(training: DataFrame):
    """StringIndexer over the training labels, alphabetical; unseen labels get an extra index
    instead of failing (a label only in the test part is reported, not a crash)."""
    from pyspark.ml.feature import StringIndexer

    return StringIndexer(
        inputCol="label", outputCol="label_index", stringOrderType="alphabetAsc", handleInvalid="keep"
    ).fit(training)


def with_weights(frame: DataFrame, weights: dict[str, float]) -> DataFrame:
    """`frame` with a `weight` column: its label's class weight, a literal map (no Python UDF)."""
    table = F.create_map(*[F.lit(value) for item in sorted(weights.items()) for value in item])
    return frame.withColumn("weight", table[F.col("label")])


def fit_logistic_regression(frame: DataFrame, setting: Setting, max_iter: int):
    """Multinomial logistic regression on `features` -> `label_index`, weighted by `weight`."""
    from pyspark.ml.classification import LogisticRegression

    return LogisticRegression(
        family="multinomial",
        featuresCol="features",
        labelCol="label_index",
        weightCol="weight",
        predictionCol="prediction_index",
        regParam=setting.reg_param,
        elasticNetParam=setting.elastic_net_param,
        maxIter=max_iter,
        standardization=True,
    ).fit(frame)


def predicted_pairs(model, frame: DataFrame, labels: list[str]) -> dict[tuple[str, str], int]:
    """{(true label, predicted label): rows} of a fitted LogisticRegressionModel on indexed rows."""
    rows = model.transform(frame).groupBy("label", "prediction_index").count().collect()
    return {(row.label, labels[int(row.prediction_index)]): row["count"] for row in rows}


def evaluate_grid(
    fit_part: DataFrame,
    validation_part: DataFrame,
    grid: list[Setting],
    max_iter: int,
    labels: list[str],
    parallelism: int,
) -> list[dict]:
    """Each setting fitted on the fit part and scored on the validation part, in grid order.

    Up to `parallelism` fits run at once from driver threads (as Spark ML's TrainValidationSplit
    does): an L-BFGS iteration is a small job, so two fits keep two cores busier than one.
    """
    from concurrent.futures import ThreadPoolExecutor

    from fruits_spark import classifier_report

    def score(setting: Setting) -> dict:
        model = fit_logistic_regression(fit_part, setting, max_iter)
        pairs = predicted_pairs(model, validation_part, labels)
        result = classifier_report.scores(classifier_report.confusion_matrix(pairs, labels), labels)
        return {
            **setting.as_dict(),
            "validation_accuracy": result["accuracy"],
            "validation_macro_f1": result["macro_f1"],
            "iterations": model.summary.totalIterations,
        }

    with ThreadPoolExecutor(
        max_workers=max(1, min(parallelism, len(grid))), thread_name_prefix="fruits-classify-grid"
    ) as pool:
        return list(pool.map(score, grid))


def best_setting(results: list[dict]) -> Setting:
    """The best validation macro F1, then accuracy; ties go to the stronger regularisation
    (larger regParam, then the smaller L1 share): the simpler model when the data cannot tell."""
    best = max(
        results,
        key=lambda r: (r["validation_macro_f1"], r["validation_accuracy"], r["reg_param"], -r["elastic_net_param"]),
    )
    return Setting(best["reg_param"], best["elastic_net_param"])


def fallback_setting(grid: list[Setting]) -> Setting:
    """The setting used when the grid cannot be evaluated: the strongest regularisation, the
    safest guess on too few rows to validate."""
    return max(grid, key=lambda s: (s.reg_param, -s.elastic_net_param))


def pipeline_model(indexer, classifier):
    """The saved model: indexer, classifier, and IndexToString back to label names."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import IndexToString

    names = IndexToString(inputCol="prediction_index", outputCol="prediction", labels=indexer.labelsArray[0])
    return PipelineModel([indexer, classifier, names])


def scored(model, frame: DataFrame) -> DataFrame:
    """The model's predictions as the job writes them: path, label, prediction, confidence."""
    from pyspark.ml.functions import vector_to_array

    return model.transform(frame).select(
        "path", "label", "prediction", F.array_max(vector_to_array("probability")).alias("confidence")
    )


def verify_predictions(written: DataFrame, test_rows: int) -> dict[tuple[str, str], int]:
    """{(label, prediction): rows} of the written predictions, once every test row is there
    exactly once with a prediction; a JobError otherwise."""
    totals = written.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("path").alias("paths"),
        F.sum(F.when(F.col("prediction").isNull(), 1).otherwise(0)).alias("unpredicted"),
    ).first()
    if totals.rows != test_rows or totals.paths != test_rows or totals.unpredicted:
        raise JobError(
            f"consistency check failed: {test_rows} test rows but {totals.rows} predictions for "
            f"{totals.paths} distinct paths, {totals.unpredicted or 0} without a prediction"
        )
    rows = written.groupBy("label", "prediction").count().collect()
    return {(row.label, row.prediction): row["count"] for row in rows}
