"""spark_jobs/classify.py on the vectors of a real featurize + pca run over generated images."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import TEST_IMAGE_SIZE, load_job, summary_of
from fruits_dev.samples import generate_samples
from fruits_spark import classifier_report
from fruits_spark.runtime import JobError

pytestmark = pytest.mark.spark

LABELS = ["Apple Red 1", "Banana", "Blueberry"]  # red, yellow, dark blue: separable by colour
PER_CLASS = 14
SUMMARY_KEYS = {
    "input_rows",
    "unlabelled_rows",
    "train_rows",
    "test_rows",
    "labels",
    "accuracy",
    "macro_f1",
    "majority_baseline",
    "reg_param",
    "elastic_net_param",
    "warnings",
    "seconds",
}
SMALL_GRID = ("--reg-params", "0.01", "--elastic-net-params", "0.0")
# Both dimensions of the grid, 4 fits instead of the default 6 (each fit is tens of small jobs).
GRID = ("--reg-params", "0.01,0.1", "--elastic-net-params", "0.0,0.5")


@pytest.fixture(scope="module")
def run(tmp_path_factory, spark_submit_cmd):
    """Images -> featurize -> pca -> classify, once for the module."""
    root = tmp_path_factory.mktemp("classify")
    generate_samples(root / "images", labels=LABELS, per_class=PER_CLASS, seed=5)
    spark_submit_cmd(
        "featurize.py",
        "--images",
        str(root / "images"),
        "--output",
        str(root / "features"),
        "--rejects",
        str(root / "rejects"),
        "--weights",
        "none",
        "--image-size",
        str(TEST_IMAGE_SIZE),
    )
    spark_submit_cmd(
        "pca.py",
        "--features",
        str(root / "features"),
        "--output",
        str(root / "pca_vectors"),
        "--k",
        "16",
        "--report",
        str(root / "pca_report.json"),
    )
    vectors = as_landing_paths(root / "pca_vectors", root / "vectors")
    output = root / "classifier" / "run=1"
    proc = spark_submit_cmd(
        "classify.py", "--vectors", str(root / "vectors"), "--pca-run", "pca-run-7", "--output", f"{output}/", *GRID
    )
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    predictions = pq.read_table(output / "predictions").to_pylist()
    return {
        "output": output,
        "proc": proc,
        "metrics": metrics,
        "predictions": predictions,
        "vectors": vectors.to_pylist(),
        "vectors_uri": root / "vectors",
        "schema": vectors.schema,
    }


def as_landing_paths(source, target) -> pa.Table:
    """pca.py's vectors with each path as the pipeline's S3 key (s3://fruits/landing/<Label>/<file>).

    The split hashes the path: with pytest's temporary folders in them, the sides (and so every
    score) would change from one session to the next. Written as one file, the rows stay in order.
    """
    table = pq.read_table(source, columns=["path", "label", "pca_features"]).sort_by("path")
    paths = ["s3://fruits/landing/" + "/".join(p.rsplit("/", 2)[-2:]) for p in table.column("path").to_pylist()]
    table = table.set_column(table.schema.get_field_index("path"), "path", pa.array(paths, pa.string()))
    target.mkdir()
    pq.write_table(table, target / "part-0.parquet")
    return table


def test_step_arguments_parse():
    job = load_job("classify")
    args = job.parse_args(
        ["--vectors", "s3://b/pca/run=1/vectors", "--pca-run", "1", "--output", "s3://b/classifier/run=2/"]
    )
    assert args.output == "s3://b/classifier/run=2"
    assert (args.test_percent, args.validation_percent, args.max_iter) == (20, 25, 100)
    assert [(s.reg_param, s.elastic_net_param) for s in args.grid] == [
        (r, e) for r in (0.001, 0.01, 0.1) for e in (0.0, 0.5)
    ]
    args = job.parse_args(
        [
            "--vectors",
            "v",
            "--pca-run",
            "1",
            "--output",
            "o",
            "--reg-params",
            "0.5,0.5,1",
            "--elastic-net-params",
            "1",
            "--test-percent",
            "30",
        ]
    )
    assert [(s.reg_param, s.elastic_net_param) for s in args.grid] == [(0.5, 1.0), (1.0, 1.0)]
    assert args.test_percent == 30
    for bad in (
        ["--test-percent", "0"],
        ["--validation-percent", "100"],
        ["--elastic-net-params", "1.5"],
        ["--reg-params", "-1"],
        ["--reg-params", "x"],
        ["--reg-params", ","],
        ["--pca-run", " "],
    ):
        with pytest.raises(SystemExit):
            job.parse_args(["--vectors", "v", "--pca-run", "1", "--output", "o", *bad])


def test_beats_the_majority_baseline_with_consistent_metrics(run):
    metrics, summary = run["metrics"], summary_of(run["proc"], "classify")
    assert set(summary) == SUMMARY_KEYS
    assert metrics["labels"] == sorted(LABELS) and summary["labels"] == str(len(LABELS))
    assert metrics["pca_run"] == "pca-run-7" and metrics["warnings"] == []
    assert metrics["input_rows"] == metrics["labelled_rows"] == len(LABELS) * PER_CLASS
    assert metrics["unlabelled_rows"] == 0
    assert metrics["train_rows"] + metrics["test_rows"] == metrics["input_rows"]
    assert metrics["fit_rows"] + metrics["validation_rows"] == metrics["train_rows"]
    assert metrics["test_rows"] > 0 and int(summary["test_rows"]) == metrics["test_rows"]

    matrix = metrics["confusion_matrix"]
    assert sum(map(sum, matrix)) == metrics["test_rows"]
    pairs = {}
    for row in run["predictions"]:
        pairs[(row["label"], row["prediction"])] = pairs.get((row["label"], row["prediction"]), 0) + 1
    assert matrix == classifier_report.confusion_matrix(pairs, metrics["labels"])  # rows in label order
    assert metrics["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(len(matrix))) / metrics["test_rows"])
    for label, row in zip(metrics["labels"], matrix):
        assert metrics["per_class"][label]["support"] == sum(row)
    values = [metrics["accuracy"], metrics["macro_f1"], metrics["majority_baseline"]] + [
        entry[key] for entry in metrics["per_class"].values() for key in ("precision", "recall", "f1")
    ]
    assert all(0.0 <= value <= 1.0 for value in values)
    assert metrics["accuracy"] >= 2 * metrics["majority_baseline"]
    assert float(summary["accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-4)

    grid = metrics["grid"]
    assert [(g["reg_param"], g["elastic_net_param"]) for g in grid] == [
        (0.01, 0.0),
        (0.01, 0.5),
        (0.1, 0.0),
        (0.1, 0.5),
    ]
    assert all(0.0 <= g["validation_macro_f1"] <= 1.0 for g in grid)
    chosen = metrics["regularisation"]
    best = max(g["validation_macro_f1"] for g in grid)
    assert any(
        g["reg_param"] == chosen["reg_param"]
        and g["elastic_net_param"] == chosen["elastic_net_param"]
        and g["validation_macro_f1"] == best
        for g in grid
    )
    assert set(metrics["class_weights"]) == set(LABELS)
    assert metrics["seconds"] > 0


def test_every_test_row_is_predicted_once_and_the_plot_is_a_png(run):
    predictions, vectors = run["predictions"], run["vectors"]
    paths = [row["path"] for row in predictions]
    assert len(paths) == len(set(paths)) == run["metrics"]["test_rows"]
    labels = {row["path"]: row["label"] for row in vectors}
    assert all(labels[row["path"]] == row["label"] for row in predictions)
    assert all(row["prediction"] in LABELS and 0.0 < row["confidence"] <= 1.0 for row in predictions)
    png = (run["output"] / "confusion_matrix.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_saved_model_reloads_and_rescores_the_test_rows(run, local_spark):
    """PipelineModel.load gives the written predictions again, with or without a label column."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    model = PipelineModel.load(str(run["output"] / "model"))
    tested = [row["path"] for row in run["predictions"]]
    frame = (
        local_spark.read.parquet(str(run["vectors_uri"]))
        .where(F.col("path").isin(*tested))
        .withColumn("features", array_to_vector("pca_features"))
    )
    expected = {row["path"]: row["prediction"] for row in run["predictions"]}
    rescored = {r.path: r.prediction for r in model.transform(frame).select("path", "prediction").collect()}
    assert rescored == expected
    unlabelled = model.transform(frame.drop("label")).select("path", "prediction").collect()
    assert {r.path: r.prediction for r in unlabelled} == expected


def test_split_is_a_stable_function_of_the_path(run, local_spark):
    """Sides depend on the path alone: a subset keeps its sides inside a bigger input, the shares
    follow the percentages, and the job's test rows are the ones the function puts there."""
    from pyspark.sql import functions as F

    from fruits_spark.classifier import TEST, split_part

    def sides(paths):
        frame = local_spark.createDataFrame([(p,) for p in paths], "path string")
        return {r.path: r.part for r in frame.select("path", split_part(F.col("path"), 20, 25).alias("part")).collect()}

    everything = [f"s3://fruits/landing/Label {i % 7}/r_{i}_100.jpg" for i in range(3000)]
    big, small = sides(everything), sides(everything[::5])
    assert all(big[path] == side for path, side in small.items())
    shares = {part: sum(side == part for side in big.values()) / len(big) for part in ("test", "validation", "fit")}
    assert shares["test"] == pytest.approx(0.20, abs=0.03)
    assert shares["validation"] == pytest.approx(0.80 * 0.25, abs=0.03)

    job_paths = [row["path"] for row in run["vectors"]]
    expected = {path for path, side in sides(job_paths).items() if side == TEST}
    assert {row["path"] for row in run["predictions"]} == expected


def test_single_label_with_unlabelled_rows_warns_instead_of_failing(run, tmp_path, spark_submit_cmd):
    """One label (plus rows without one): a model and metrics with warnings, and the label's test
    rows are the ones it had in the bigger input (the split does not move when rows go or come)."""
    vectors = run["vectors"]
    banana = [row for row in vectors if row["label"] == "Banana"]
    unlabelled = [{**row, "path": row["path"] + ".copy.jpg", "label": None} for row in vectors[:3]]
    folder = tmp_path / "vectors"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(banana + unlabelled, schema=run["schema"]), folder / "part-0.parquet")
    output = tmp_path / "classifier"
    proc = spark_submit_cmd(
        "classify.py", "--vectors", str(folder), "--pca-run", "one", "--output", str(output), *SMALL_GRID
    )
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["labels"] == ["Banana"] and metrics["unlabelled_rows"] == 3
    assert metrics["labelled_rows"] == len(banana)
    assert any("only one label" in w for w in metrics["warnings"])
    assert any("3 of" in w and "no label" in w for w in metrics["warnings"])
    assert "WARNING only one label in the training part (Banana)" in proc.stdout  # the log (spark-submit's stdout)
    assert metrics["accuracy"] == metrics["majority_baseline"] == 1.0
    assert metrics["grid"] == [] and metrics["regularisation"]["chosen_by"].startswith("fallback")
    tested = {row["path"] for row in pq.read_table(output / "predictions").to_pylist()}
    assert tested == {row["path"] for row in run["predictions"] if row["label"] == "Banana"}
    assert summary_of(proc, "classify")["warnings"] == str(len(metrics["warnings"]))


def test_a_vectors_list_reads_exactly_the_datasets_it_names(run, tmp_path, spark_submit_cmd):
    """A PCA space's vectors are per-batch datasets named in its list: those and nothing else
    (a dataset of the same folder that the list does not name is not read)."""
    rows = run["vectors"]
    half = len(rows) // 2
    folders = [tmp_path / "space" / "batch=b1", tmp_path / "space" / "batch=b2"]
    for folder, part in zip(folders, (rows[:half], rows[half:])):
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(part, schema=run["schema"]), folder / "part-0.parquet")
    stray = tmp_path / "space" / "batch=uncommitted"
    stray.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:5], schema=run["schema"]), stray / "part-0.parquet")
    listing = tmp_path / "vectors_list.txt"
    listing.write_text("".join(f"{f}/\n" for f in folders), encoding="utf-8")
    output = tmp_path / "out"
    spark_submit_cmd(
        "classify.py", "--vectors-list", str(listing), "--pca-run", "pca-run-8", "--output", str(output), *SMALL_GRID
    )
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["input_rows"] == len(rows) and metrics["vectors"] == str(listing)
    assert metrics["test_rows"] == run["metrics"]["test_rows"]  # the same rows, split the same way


def test_empty_input_exits_2_with_one_line(tmp_path, spark_submit_cmd):
    folder = tmp_path / "vectors"
    folder.mkdir()
    schema = pa.schema([("path", pa.string()), ("label", pa.string()), ("pca_features", pa.list_(pa.float64()))])
    pq.write_table(schema.empty_table(), folder / "part-0.parquet")
    proc = spark_submit_cmd(
        "classify.py", "--vectors", str(folder), "--pca-run", "1", "--output", str(tmp_path / "out"), check=False
    )
    assert proc.returncode == 2
    # spark-submit merges the Python driver's stderr into its stdout.
    errors = [line for line in proc.stdout.splitlines() if line.startswith("classify: error:")]
    assert errors == [f"classify: error: the vectors input is empty (0 rows): nothing to classify: {folder}"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_scores_baseline_weights_and_consistency_checks():
    labels = ["a", "b", "c"]
    matrix = classifier_report.confusion_matrix({("a", "a"): 3, ("a", "b"): 1, ("b", "b"): 2, ("c", "a"): 0}, labels)
    assert matrix == [[3, 1, 0], [0, 2, 0], [0, 0, 0]]
    measured = classifier_report.scores(matrix, labels)
    assert measured["accuracy"] == pytest.approx(5 / 6)
    assert measured["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert measured["macro_f1"] == pytest.approx((6 / 7 + 0.8) / 2)  # "c" has no test row: not averaged
    assert classifier_report.majority_baseline({"a": 5, "b": 5, "c": 1}, {"a": 1, "b": 3}) == ("a", 0.25)
    assert classifier_report.balanced_weights({"a": 30, "b": 10}) == {"a": 40 / 60, "b": 2.0}
    metrics = {
        "confusion_matrix": matrix,
        "labels": labels,
        "test_rows": 6,
        "train_rows": 10,
        "labelled_rows": 16,
        "majority_baseline": 0.5,
        **measured,
    }
    classifier_report.check_consistency(metrics)
    with pytest.raises(JobError, match="sums to 6, not to the 7 test rows"):
        classifier_report.check_consistency({**metrics, "test_rows": 7, "labelled_rows": 17})
    with pytest.raises(JobError, match="not in \\[0, 1\\]"):
        classifier_report.check_consistency({**metrics, "accuracy": 1.5})
