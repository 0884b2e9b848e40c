"""spark_jobs/pca.py against classical PCA computed with numpy."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SPARK_SUBMIT, job_env
from fruits_spark.pca_report import smallest_k_for_variance

pytestmark = pytest.mark.spark


def write_features(folder, matrix: np.ndarray, labels: list[str], prefix: str = "img") -> None:
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "path": [f"s3://bucket/{labels[i]}/{prefix}_{i}.jpg" for i in range(len(matrix))],
            "label": labels,
            "features": pa.array(list(matrix.astype(np.float32)), type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, folder / "part-0.parquet")


def synthetic(rows: int, dim: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Non-negative, far-from-centred data (like ReLU features) with a decaying spectrum."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, 6)) * np.array([6.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    mixing = rng.normal(size=(6, dim))
    matrix = np.abs(5.0 + latent @ mixing + rng.normal(scale=0.1, size=(rows, dim)))
    labels = [["Apple Red 1", "Banana", "Kiwi"][i % 3] for i in range(rows)]
    return matrix, labels


def classical_pca(matrix: np.ndarray):
    centred = matrix - matrix.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    ratios = singular**2 / np.sum(singular**2)
    return centred, components, ratios


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    first, first_labels = synthetic(180, 48, seed=1)
    second, second_labels = synthetic(60, 48, seed=2)
    write_features(root / "batch=1", first, first_labels, "a")
    write_features(root / "batch=2", second, second_labels, "b")
    return root, np.vstack([first, second]).astype(np.float32).astype(np.float64)


def read_projection(folder) -> dict[str, np.ndarray]:
    table = pq.read_table(folder).to_pandas()
    return dict(zip(table["path"], map(np.asarray, table["pca_features"])))


def test_fixed_k_equals_classical_pca_up_to_sign(two_batches, tmp_path, spark_submit_cmd):
    root, matrix = two_batches
    inputs = f"{root / 'batch=1'},{root / 'batch=2'}"
    report_path = tmp_path / "pca" / "report.json"
    proc = spark_submit_cmd(
        "pca.py", "--features", inputs, "--output", str(tmp_path / "vectors"), "--k", "5", "--report", str(report_path)
    )
    assert "pca: rows=240 input_dim=48 k=5" in proc.stdout

    centred, components, ratios = classical_pca(matrix)
    expected = centred @ components[:5].T
    projected = read_projection(tmp_path / "vectors")
    paths = [f"s3://bucket/{lab}/a_{i}.jpg" for i, lab in enumerate(synthetic(180, 48, 1)[1])] + [
        f"s3://bucket/{lab}/b_{i}.jpg" for i, lab in enumerate(synthetic(60, 48, 2)[1])
    ]
    ours = np.stack([projected[p] for p in paths])
    assert ours.shape == (240, 5)
    signs = np.sign(np.sum(ours * expected, axis=0))
    np.testing.assert_allclose(ours * signs, expected, atol=1e-6 * np.abs(expected).max())
    assert np.abs(ours.mean(axis=0)).max() < 1e-6 * np.abs(ours).max()  # centred, unlike raw Spark

    report = json.loads(report_path.read_text())
    assert report["rows"] == 240 and report["input_dim"] == 48 and report["k"] == 5
    np.testing.assert_allclose(report["explained_variance"], ratios[:5], atol=1e-6)
    np.testing.assert_allclose(report["cumulative_explained_variance"], np.cumsum(ratios[:5]), atol=1e-6)
    for name in ("scree", "scatter"):
        png = (tmp_path / "pca" / f"report_{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert (tmp_path / "vectors_model" / "metadata").exists()


def test_projection_is_written_without_dictionaries_that_cannot_pay(local_spark, tmp_path):
    """The dictionary switches name real column paths: on data where every column would get a
    dictionary by default, only the labels keep one."""
    from fruits_spark.pca_model import PROJECTED_SCHEMA, projected_writer

    rows = [(f"s3://bucket/{i % 2}.jpg", "Banana", [1.0, 2.0]) for i in range(100)]
    frame = local_spark.createDataFrame(rows, PROJECTED_SCHEMA).coalesce(1)

    def dictionaries(folder):
        [part] = folder.glob("*.parquet")
        chunks = pq.ParquetFile(part).metadata.row_group(0)
        return {
            chunks.column(i).path_in_schema: chunks.column(i).has_dictionary_page for i in range(chunks.num_columns)
        }

    frame.write.parquet(str(tmp_path / "default"))
    assert dictionaries(tmp_path / "default") == {"path": True, "label": True, "pca_features.list.element": True}
    projected_writer(frame).parquet(str(tmp_path / "ours"))
    assert dictionaries(tmp_path / "ours") == {"path": False, "label": True, "pca_features.list.element": False}
    assert pq.read_table(tmp_path / "ours").to_pylist() == pq.read_table(tmp_path / "default").to_pylist()


def test_variance_target_picks_the_smallest_k(two_batches, tmp_path, spark_submit_cmd):
    root, matrix = two_batches
    _, _, ratios = classical_pca(matrix)
    expected_k = int(np.searchsorted(np.cumsum(ratios), 0.9) + 1)
    assert 1 < expected_k < 48
    listing = tmp_path / "inputs.txt"  # the form the EMR backend uses
    listing.write_text(f"{root / 'batch=1'}\n\n{root / 'batch=2'}\n", encoding="utf-8")
    proc = spark_submit_cmd(
        "pca.py",
        "--features-list",
        str(listing),
        "--output",
        str(tmp_path / "v"),
        "--variance",
        "0.9",
        "--report",
        str(tmp_path / "r.json"),
        "--model",
        str(tmp_path / "model"),
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["k"] == expected_k
    assert report["cumulative_explained_variance"][-1] >= 0.9
    assert sum(ratios[: expected_k - 1]) < 0.9
    assert all(len(v) == expected_k for v in read_projection(tmp_path / "v").values())
    assert (tmp_path / "model" / "stages").is_dir()
    assert f"k={expected_k}" in proc.stdout


def test_spark_ml_solver_and_saved_model_agree_with_the_output(two_batches, tmp_path, spark_submit_cmd, local_spark):
    """`--solver spark-ml` (Spark ML's own PCA.fit) gives the same result, and the saved
    PipelineModel, applied by Spark ML to the features, reproduces the written vectors."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import array_to_vector, vector_to_array

    root, _ = two_batches
    inputs = f"{root / 'batch=1'},{root / 'batch=2'}"
    results = {}
    for solver in ("batched", "spark-ml"):
        out = tmp_path / solver
        spark_submit_cmd(
            "pca.py",
            "--features",
            inputs,
            "--output",
            str(out / "vectors"),
            "--k",
            "4",
            "--report",
            str(out / "report.json"),
            "--solver",
            solver,
        )
        results[solver] = (read_projection(out / "vectors"), json.loads((out / "report.json").read_text()))
    (ours, our_report), (theirs, their_report) = results["batched"], results["spark-ml"]
    np.testing.assert_allclose(our_report["explained_variance"], their_report["explained_variance"], atol=1e-9)
    assert ours.keys() == theirs.keys()
    for path in ours:  # same sign too: both go through the same orientation rule
        np.testing.assert_allclose(ours[path], theirs[path], atol=1e-6 * np.abs(ours[path]).max())

    model = PipelineModel.load(str(tmp_path / "batched" / "vectors_model"))
    assert [type(stage).__name__ for stage in model.stages] == ["StandardScalerModel", "PCAModel"]
    assert model.stages[0].getWithMean() and not model.stages[0].getWithStd()
    frame = local_spark.read.parquet(str(root / "batch=1"), str(root / "batch=2"))
    applied = (
        model.transform(frame.select("path", array_to_vector("features").alias("vector")))
        .select("path", vector_to_array("pca", "float64").alias("v"))
        .collect()
    )
    assert len(applied) == len(ours)
    for row in applied:
        np.testing.assert_allclose(row.v, ours[row.path], rtol=1e-9, atol=1e-9)


def test_smallest_k_for_variance():
    assert smallest_k_for_variance([0.5, 0.3, 0.15, 0.05], 0.8) == 2
    assert smallest_k_for_variance([0.5, 0.3, 0.15, 0.05], 0.81) == 3
    assert smallest_k_for_variance([0.5, 0.3, 0.15, 0.05], 1.0) == 4


@pytest.mark.parametrize("case", ["empty", "mixed", "nan", "null_vector", "too_large_k", "missing"])
def test_bad_input_fails_with_one_clear_line(case, tmp_path, spark_submit_cmd):
    folder = tmp_path / "features"
    k = "3"
    if case == "empty":
        write_features(folder, np.zeros((0, 8)), [])
        expected = "pca: error: the features input is empty (0 rows): nothing to fit"
    elif case == "mixed":
        folder.mkdir()
        pq.write_table(
            pa.table(
                {
                    "path": ["a/x.jpg", "a/y.jpg"],
                    "label": ["a", "a"],
                    "features": pa.array([[1.0] * 8, [1.0] * 6], type=pa.list_(pa.float32())),
                }
            ),
            folder / "part-0.parquet",
        )
        expected = "pca: error: features vectors have mixed lengths: from 6 to 8 values"
    elif case in ("nan", "null_vector"):
        folder.mkdir()
        bad = [1.0, float("nan")] + [1.0] * 6 if case == "nan" else None
        pq.write_table(
            pa.table(
                {
                    "path": [f"a/{i}.jpg" for i in range(4)],
                    "label": ["a"] * 4,
                    "features": pa.array([[1.0] * 8, bad, [2.0] * 8, [3.0] * 8], type=pa.list_(pa.float32())),
                }
            ),
            folder / "part-0.parquet",
        )
        expected = (
            "pca: error: 1 of 4 features vectors contain NaN, infinite or null values"
            if case == "nan"
            else "pca: error: 1 of 4 rows have no features vector"
        )
    elif case == "too_large_k":
        write_features(folder, np.random.default_rng(0).random((20, 8)), ["a"] * 20)
        k = "9"
        expected = "pca: error: --k 9 is larger than the feature dimension 8"
    else:
        expected = f"pca: error: features not found: {folder}"
    proc = spark_submit_cmd(
        "pca.py",
        "--features",
        str(folder),
        "--output",
        str(tmp_path / "out"),
        "--k",
        k,
        "--report",
        str(tmp_path / "r.json"),
        check=False,
    )
    assert proc.returncode == 2
    assert expected in proc.stdout.splitlines()
    assert not (tmp_path / "out").exists()


def test_job_defaults_yield_to_spark_submit_settings(tmp_path):
    """`unless_submitted` drops the job's own default where spark-submit gave the setting, as
    pca.py does with its Arrow batch size, and the session keeps the user's value."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import json\n"
        "from fruits_spark.runtime import create_session, unless_submitted\n"
        "defaults = unless_submitted({'spark.sql.execution.arrow.maxRecordsPerBatch': '2500',\n"
        "                             'spark.sql.shuffle.partitions': '3'})\n"
        "spark = create_session('probe', defaults)\n"
        "print(json.dumps({'defaults': defaults,\n"
        "                  'batch': spark.conf.get('spark.sql.execution.arrow.maxRecordsPerBatch'),\n"
        "                  'shuffle': spark.conf.get('spark.sql.shuffle.partitions')}))\n"
    )
    env = job_env()  # fruits_spark imports from the installed project
    proc = subprocess.run(
        [
            str(SPARK_SUBMIT),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.sql.execution.arrow.maxRecordsPerBatch=7",
            str(script),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"defaults": {"spark.sql.shuffle.partitions": "3"}, "batch": "7", "shuffle": "3"}


# ----------------------------------------------------------------------------- incremental runs


def write_batch(folder, matrix: np.ndarray, labels: list[str], prefix: str) -> list[str]:
    """A features dataset like featurize.py's, sha256 included (one content a distinct row)."""
    import hashlib

    folder.mkdir(parents=True)
    rows = matrix.astype(np.float32)
    digests = [hashlib.sha256(row.tobytes()).hexdigest() for row in rows]
    pq.write_table(
        pa.table(
            {
                "path": [f"s3://bucket/landing/{labels[i]}/{prefix}_{i}.jpg" for i in range(len(rows))],
                "label": labels,
                "features": pa.array(list(rows), type=pa.list_(pa.float32())),
                "sha256": digests,
            }
        ),
        folder / "part-0.parquet",
    )
    return digests


def same_family(rows: int, dim: int, seed: int, mixing_seed: int = 11) -> tuple[np.ndarray, list[str]]:
    """`synthetic` data whose latent directions (the mixing) are fixed by `mixing_seed`: two seeds
    are two samples of one distribution, two mixing seeds two distributions."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, 6)) * np.array([6.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    mixing = np.random.default_rng(mixing_seed).normal(size=(6, dim))
    matrix = np.abs(5.0 + latent @ mixing + rng.normal(scale=0.1, size=(rows, dim)))
    return matrix, [["Apple Red 1", "Banana", "Kiwi"][i % 3] for i in range(rows)]


def run_pca(spark_submit_cmd, out, features: list, *extra: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = spark_submit_cmd(
        "pca.py",
        "--features",
        ",".join(str(f) for f in features),
        "--output",
        str(out / "vectors"),
        "--model",
        str(out / "model"),
        "--report",
        str(out / "report.json"),
        "--k",
        "4",
        "--space-id",
        out.name,
        *extra,
    )
    report = json.loads((out / "report.json").read_text())
    report["stdout"] = proc.stdout
    return report


def history_file(path, folders) -> str:
    path.write_text("".join(f"{f}\n" for f in folders), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, spark_submit_cmd):
    """Batch b1 fitted from scratch: the state every incremental test starts from."""
    root = tmp_path_factory.mktemp("incremental")
    first, labels = same_family(300, 24, seed=1)
    write_batch(root / "features" / "batch=b1", first, labels, "a")
    report = run_pca(spark_submit_cmd, root / "run1", [root / "features" / "batch=b1"])
    return root, first, report


def test_a_forced_refit_gives_the_vectors_of_a_full_fit(first_run, tmp_path, spark_submit_cmd):
    root, first, _ = first_run
    second, labels = same_family(80, 24, seed=2)
    second[5] = first[7]  # the same content landed twice: it must weigh once, in both fits
    write_batch(tmp_path / "features" / "batch=b2", second, labels, "b")
    history = history_file(tmp_path / "history.txt", [root / "features" / "batch=b1"])
    incremental = run_pca(
        spark_submit_cmd,
        tmp_path / "run2",
        [tmp_path / "features" / "batch=b2"],
        "--previous",
        str(root / "run1"),
        "--history-list",
        history,
        "--refit",
        "always",
    )
    full = run_pca(
        spark_submit_cmd, tmp_path / "full", [root / "features" / "batch=b1", tmp_path / "features" / "batch=b2"]
    )
    assert incremental["mode"] == "refit" and incremental["refit"]["reason"] == "requested (--refit always)"
    assert incremental["rows"] == full["rows"] == 380 and incremental["fitted_rows"] == full["fitted_rows"] == 379
    assert incremental["duplicates_skipped"] == 1 and full["duplicates_skipped"] == 1
    assert incremental["projected_batches"] == {"b1": 300, "b2": 80}
    ours, theirs = read_projection(tmp_path / "run2" / "vectors"), read_projection(tmp_path / "full" / "vectors")
    assert ours.keys() == theirs.keys() and len(ours) == 380
    scale = max(np.abs(v).max() for v in theirs.values())
    for path in ours:
        np.testing.assert_allclose(ours[path], theirs[path], atol=1e-9 * scale)

    distinct = np.vstack([first, np.delete(second, 5, axis=0)]).astype(np.float32).astype(np.float64)
    _, _, ratios = classical_pca(distinct)  # a content counted once, as numpy would on distinct rows
    np.testing.assert_allclose(incremental["explained_variance"], ratios[:4], atol=1e-9)
    listed = (tmp_path / "run2" / "vectors_list.txt").read_text().split()
    assert listed == [f"{tmp_path / 'run2' / 'vectors'}/batch=b1/", f"{tmp_path / 'run2' / 'vectors'}/batch=b2/"]


def test_without_a_refit_only_the_new_batch_is_read_and_projected(first_run, tmp_path, spark_submit_cmd):
    root, first, first_report = first_run
    second, labels = same_family(100, 24, seed=3)  # another sample of the same distribution
    write_batch(tmp_path / "features" / "batch=b2", second, labels, "b")
    # The history names datasets that do not exist: reading any of them would fail the job.
    history = history_file(tmp_path / "history.txt", [tmp_path / "missing" / "batch=b1"])
    report = run_pca(
        spark_submit_cmd,
        tmp_path / "run2",
        [tmp_path / "features" / "batch=b2"],
        "--previous",
        str(root / "run1"),
        "--history-list",
        history,
        "--refit-angle",
        "10",
    )
    assert report["mode"] == "project", report["refit"]
    assert 0 < report["refit"]["max_angle_degrees"] < 10 and "mode=project" in report["stdout"]
    assert report["space_id"] == first_report["space_id"] == "run1"
    assert report["projected_batches"] == {"b2": 100} and report["history_datasets"] == 0
    assert report["rows"] == 400 and report["new_rows"] == 100 and report["fitted_rows"] == 400
    assert [p.name for p in (tmp_path / "run2" / "vectors").glob("batch=*")] == ["batch=b2"]

    basis = np.load(root / "run1" / "basis.npz")  # the current space's mean and components
    expected = (second.astype(np.float32).astype(np.float64) - basis["mean"]) @ basis["components"]
    ours = read_projection(tmp_path / "run2" / "vectors")
    for i, label in enumerate(labels):
        np.testing.assert_allclose(ours[f"s3://bucket/landing/{label}/b_{i}.jpg"], expected[i], atol=1e-9)
    listed = (tmp_path / "run2" / "vectors_list.txt").read_text().split()
    assert listed == [f"{root / 'run1' / 'vectors'}/batch=b1/", f"{tmp_path / 'run2' / 'vectors'}/batch=b2/"]
    # The moments still cover everything: the next run merges with all 400 rows.
    saved = np.load(tmp_path / "run2" / "moments.npz")
    both = np.vstack([first, second]).astype(np.float32).astype(np.float64)
    assert int(saved["rows"]) == 400
    np.testing.assert_allclose(saved["mean"], both.mean(axis=0), rtol=1e-12)


def test_a_moved_subspace_triggers_a_refit_that_reprojects_the_history(first_run, tmp_path, spark_submit_cmd):
    root, _, _ = first_run
    other, labels = same_family(600, 24, seed=4, mixing_seed=99)  # another distribution, larger
    write_batch(tmp_path / "features" / "batch=b2", other, labels, "b")
    history = history_file(tmp_path / "history.txt", [root / "features" / "batch=b1"])
    report = run_pca(
        spark_submit_cmd,
        tmp_path / "run2",
        [tmp_path / "features" / "batch=b2"],
        "--previous",
        str(root / "run1"),
        "--history-list",
        history,
    )
    assert report["mode"] == "refit"
    assert report["refit"]["max_angle_degrees"] > 10 and "moved" in report["refit"]["reason"]
    assert report["space_id"] == "run2" and report["projected_batches"] == {"b1": 300, "b2": 600}
    assert report["rows"] == 900 and report["history_datasets"] == 1


def test_a_batch_without_features_keeps_the_space_and_its_list(first_run, tmp_path, spark_submit_cmd):
    """Every image of the batch was rejected: nothing to project, the state carries over."""
    root, _, first_report = first_run
    write_batch(tmp_path / "features" / "batch=b2", np.zeros((0, 24)), [], "b")
    report = run_pca(
        spark_submit_cmd, tmp_path / "run2", [tmp_path / "features" / "batch=b2"], "--previous", str(root / "run1")
    )
    assert report["mode"] == "project" and report["refit"]["max_angle_degrees"] == pytest.approx(0.0, abs=1e-6)
    assert report["rows"] == 300 and report["new_rows"] == 0 and report["projected_batches"] == {}
    assert (tmp_path / "run2" / "vectors_list.txt").read_text() == (root / "run1" / "vectors_list.txt").read_text()
    assert report["space_id"] == first_report["space_id"]
