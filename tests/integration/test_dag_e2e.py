"""fruits_pipeline end to end: moto's S3 server, local Spark, a real Airflow metadata DB.

One module-scoped bucket goes through the life of a deployment: a first batch (with broken
files), a run with nothing new, an incremental batch, an injected validation failure that
must leave its batch uncommitted, and the next run that commits it. Each test states what it
expects relative to the ledger it found, so the tests hold in any order.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import TEST_IMAGE_SIZE
from fruits import layout
from fruits_dev import runner, s3_server
from fruits_dev.samples import generate_samples

pytestmark = pytest.mark.spark

BUCKET = "fruits-e2e"
CONF = {"bucket": BUCKET, "weights": "none", "image_size": TEST_IMAGE_SIZE, "sensor_timeout": 0}
LABELS = ["Apple Red 1", "Banana", "Kiwi"]


class Deployment:
    def __init__(self, tmp_path, endpoint):
        self.tmp = tmp_path
        self.s3 = s3_server.client(endpoint)
        s3_server.ensure_bucket(self.s3, BUCKET)
        self.env = runner.airflow_env(
            tmp_path / "airflow",
            extra={
                "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(endpoint),
                "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
                "FRUITS_TASK_RETRIES": "0",
                "FRUITS_SPARK_DRIVER_MEMORY": "2g",
            },
        )
        self.runs = 0

    def land(self, **kwargs) -> object:
        root = self.tmp / f"samples-{self.runs}"
        samples = generate_samples(root, labels=LABELS, n_classes=3, **kwargs)
        s3_server.upload_tree(self.s3, BUCKET, root, "landing/")
        return samples

    def run(self, **conf) -> dict:
        self.runs += 1
        result = runner.run_once(self.env, {**CONF, **conf}, log_file=self.tmp / f"run-{self.runs}.log")
        return result

    def classify(self, pca_run_id: str) -> dict:
        self.runs += 1
        return runner.run_once(
            self.env,
            {"bucket": BUCKET, "pca_run_id": pca_run_id},
            dag_id="fruits_classifier",
            log_file=self.tmp / f"run-{self.runs}-classifier.log",
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def json(self, key: str):
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def put_json(self, key: str, payload) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(payload).encode())

    def parquet(self, prefix: str):
        import pyarrow as pa

        parts = [k for k in self.keys(prefix) if k.endswith(".parquet")]
        return pa.concat_tables(
            [pq.read_table(io.BytesIO(self.s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())) for k in parts]
        )

    def ledger(self) -> dict:
        return self.json("state/ledger.json")

    def sources(self, batch_id: str) -> list[str]:
        """The landing keys a batch planned (its manifest.jsonl)."""
        body = self.s3.get_object(Bucket=BUCKET, Key=layout.manifest_key(batch_id))["Body"].read().decode()
        return [json.loads(line)["source"].split(f"{BUCKET}/", 1)[1] for line in body.split("\n") if line]

    def committed_sources(self) -> list[str]:
        return [k for b in self.ledger()["batches"] for k in self.sources(b["batch_id"])]

    def report(self, run_id: str) -> dict:
        return self.json(f"reports/{run_id.replace(':', '_').replace('+', '_')}.json")


def assert_all_succeeded(result):
    failed = {t: s for t, s in result["tasks"].items() if s != "success"}
    assert result["state"] == "success" and not failed, (failed, result["output"][-4000:])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    with s3_server.s3_endpoint() as endpoint:
        yield Deployment(tmp_path_factory.mktemp("e2e"), endpoint)


@pytest.fixture(scope="module")
def first_run(deployment):
    samples = deployment.land(per_class=4, broken=True, seed=1)
    result = deployment.run()
    return samples, result, deployment.ledger()


def test_first_run_processes_every_landed_image(deployment, first_run):
    samples, result, ledger = first_run
    assert_all_succeeded(result)
    assert len(ledger["batches"]) == 1
    batch = ledger["batches"][0]
    n_files = len(samples.all_image_files())
    empty = sum(1 for p in samples.broken if p.stat().st_size == 0)  # rejected at planning
    planned = deployment.sources(batch["batch_id"])
    assert batch["images"] + empty == n_files and batch["images"] == len(planned) and "keys" not in batch
    assert empty and batch["planning_rejects"] == empty
    assert not any(k.endswith((".txt", ".csv", ".DS_Store")) for k in planned)
    # committed images left the landing prefix (their copies stay under batches/); the rest did not
    assert deployment.keys("landing/") == sorted(
        "landing/" + p.relative_to(samples.root).as_posix() for p in samples.ignored
    )

    features = deployment.parquet(f"features/batch={batch['batch_id']}/")
    rejects = deployment.parquet(f"rejects/batch={batch['batch_id']}/")
    assert features.num_rows == len(samples.images) and rejects.num_rows == len(samples.broken) - empty
    assert all(p.startswith(f"s3://{BUCKET}/landing/") for p in features.column("path").to_pylist())
    assert set(features.column("label").to_pylist()) == set(LABELS)
    assert all(len(v) == 1280 for v in features.column("features").to_pylist())

    report = deployment.report(result["run_id"])
    assert report["status"] == "success"
    assert report["images_sensed"] + report["planning_rejects"] == n_files
    assert (report["features_rows"], report["rejects_rows"]) == (len(samples.images), len(samples.broken) - empty)
    assert sum(report["ignored"].values()) == len(samples.ignored)
    assert report["features_total"] == report["pca_rows"] == len(samples.images)
    assert report["features_dim"] == 1280 and 1 <= report["pca_k"] <= len(samples.images)
    assert 0.95 <= report["explained_variance_total"] <= 1.0 + 1e-9
    assert set(report["stage_seconds"]) >= {"plan_batch", "featurize", "pca", "validate"}
    pca_keys = deployment.keys(report["outputs"]["pca"].split(f"{BUCKET}/", 1)[1])
    assert any(k.endswith("report_scree.png") for k in pca_keys)
    assert any(k.endswith("report_scatter.png") for k in pca_keys)
    assert any("/model/" in k for k in pca_keys)


def test_a_run_with_nothing_new_is_skipped(deployment, first_run):
    before = deployment.ledger()
    reports = deployment.keys("reports/")
    result = deployment.run()
    assert result["tasks"]["wait_for_new_images"] == "skipped"
    assert all(state == "skipped" for state in result["tasks"].values()), result["tasks"]
    assert result["state"] != "failed"
    assert deployment.ledger() == before
    assert deployment.keys("reports/") == reports


def test_new_images_only_are_processed_and_pca_covers_all(deployment, first_run):
    before = deployment.ledger()
    added = deployment.land(per_class=2, start_index=500, seed=2)
    result = deployment.run()
    assert_all_succeeded(result)
    ledger = deployment.ledger()
    assert ledger["batches"][:-1] == before["batches"]  # one batch more, the others untouched
    newest = ledger["batches"][-1]
    assert newest["images"] == len(added.images) == 6
    assert all("r_50" in k for k in deployment.sources(newest["batch_id"]))  # only the new files
    report = deployment.report(result["run_id"])
    total = sum(b["features_rows"] for b in before["batches"]) + len(added.images)
    assert report["features_rows"] == 6 and report["features_total"] == report["pca_rows"] == total
    # Incremental PCA: the space's vectors are the datasets its list names (this run's after a refit;
    # the committed ones plus this batch's after a projection).
    assert report["pca_mode"] in ("refit", "project") and report["pca_refit_reason"]
    prefix = report["outputs"]["pca"].split(f"{BUCKET}/", 1)[1]
    listed = deployment.s3.get_object(Bucket=BUCKET, Key=prefix + "vectors_list.txt")["Body"].read().decode().split()
    pca = pa.concat_tables([deployment.parquet(uri.split(f"{BUCKET}/", 1)[1]) for uri in listed])
    paths = pca.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == total
    vectors = np.stack(pca.column("pca_features").to_numpy(zero_copy_only=False))
    assert vectors.shape == (total, report["pca_k"]) and np.isfinite(vectors).all()


def test_failed_validation_leaves_the_batch_for_the_next_run(deployment, first_run):
    added = deployment.land(per_class=1, start_index=700, seed=3)
    honest = deployment.ledger()
    # Inject an inconsistency: the ledger claims one committed features row that does not exist.
    tampered = json.loads(json.dumps(honest))
    tampered["batches"][0]["features_rows"] += 1
    deployment.put_json("state/ledger.json", tampered)

    failed = deployment.run()
    assert failed["state"] == "failed"
    assert failed["tasks"]["validate"] == "failed"
    assert failed["tasks"]["commit_batch"] in ("upstream_failed", None)
    assert "PCA rows" in failed["output"] and "difference -1" in failed["output"]
    assert deployment.ledger() == tampered  # nothing committed
    failure = deployment.report(failed["run_id"])
    assert (failure["status"], failure["failed_task"], failure["committed"]) == ("failed", "validate", None)
    assert "PCA rows" in failure["error"]

    deployment.put_json("state/ledger.json", honest)
    retried = deployment.run()
    assert_all_succeeded(retried)
    ledger = deployment.ledger()
    assert ledger["batches"][:-1] == honest["batches"]
    assert ledger["batches"][-1]["images"] == len(added.images)
    # Same images -> same (content-addressed) batch: the re-run overwrote its outputs.
    batch_ids = [b["batch_id"] for b in ledger["batches"]]
    assert len(set(batch_ids)) == len(batch_ids)
    assert set(batch_ids) <= {k.split("/")[1] for k in deployment.keys("batches/") if k.endswith("manifest.jsonl")}
    report = deployment.report(retried["run_id"])
    all_keys = deployment.committed_sources()
    assert len(all_keys) == len(set(all_keys))
    assert report["pca_rows"] == sum(b["features_rows"] for b in ledger["batches"])


def test_the_classifier_trains_on_a_committed_pca_run(deployment, first_run):
    samples, result, ledger = first_run
    classified = deployment.classify(result["run_id"])
    assert_all_succeeded(classified)
    prefix = layout.classifier_prefix(classified["run_id"])
    metrics = deployment.json(prefix + "metrics.json")
    assert metrics["pca_run"] == result["run_id"] and sorted(metrics["labels"]) == sorted(LABELS)
    # Every featurized image of that run is in the training or the test part, scored once.
    assert metrics["train_rows"] + metrics["test_rows"] == len(samples.images)
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_rows"] > 0
    assert all(0.0 <= metrics[m] <= 1.0 for m in ("accuracy", "macro_f1", "majority_baseline"))
    predictions = deployment.parquet(prefix + "predictions/")
    assert predictions.num_rows == metrics["test_rows"]
    assert all(p.startswith(f"s3://{BUCKET}/landing/") for p in predictions.column("path").to_pylist())
    keys = deployment.keys(prefix)
    assert prefix + "confusion_matrix.png" in keys and any(k.startswith(prefix + "model/") for k in keys)


def test_the_pca_asset_event_says_where_the_vectors_are(deployment, first_run):
    """The event a scheduler turns into a fruits_classifier run, with the run's data in its extra,
    read from the Airflow metadata DB of these runs."""
    import sqlite3

    samples, result, ledger = first_run
    db = sqlite3.connect(f"{deployment.env['AIRFLOW_HOME']}/airflow.db")
    rows = db.execute(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = 'fruits_pca_vectors' AND e.source_run_id = ?",
        (result["run_id"],),
    ).fetchall()
    [extra] = [json.loads(row[0]) for row in rows]
    report = deployment.report(result["run_id"])
    pca_prefix = layout.pca_prefix(result["run_id"])
    assert extra == {
        "bucket": BUCKET,
        "run_id": result["run_id"],
        "pca_prefix": pca_prefix,
        "k": report["pca_k"],
        "rows": report["pca_rows"],
        "batch_id": ledger["batches"][0]["batch_id"],
        "pca_mode": "refit",
        "space_id": report["pca_space_id"],
        "vectors_list": pca_prefix + "vectors_list.txt",
    }
