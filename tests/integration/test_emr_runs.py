"""The EMR backend end to end on moto, every step executed by EMR's Spark: whole DAG runs, each
scenario on a deployment of its own.

No AWS here. Each scenario starts a moto server (EMR + S3) inside the test process and runs the
DAG in a child process (`runner.run_once`), which talks to it over HTTP exactly as it would to
AWS. moto accepts clusters and steps but never runs a step: the local EMR
(fruits_dev/local_emr.py) plays the cluster, running each step's command line with EMR's stack
(Spark 3.5, the nodes' Python packages: `make emr-stack`) on a Spark master with two executor
JVMs, the code fetched from S3, s3:// through S3A, logs under the LogUri as EMR lays them out.
Every request the DAG makes is recorded, to check regions, the cluster request and the IAM policy.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import io
import json
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SPARK_JOBS
from fruits import layout
from fruits.backends.emr import cluster as emr_cluster
from fruits.backends.emr import code, iam
from fruits_dev import emr_stack, local_emr, runner
from fruits_dev.local_emr import LocalEmr, all_clusters
from fruits_dev.samples import generate_samples

pytestmark = pytest.mark.spark

REGION = "eu-west-3"
AIRFLOW_KEY = "AKIDAIRFLOWROLE"  # the DAG's credentials; the test's own client uses another key
CONF = {"weights": "none", "image_size": 32, "sensor_timeout": 0}
BROKEN_WEIGHTS = "models/broken.weights.h5"
CREDENTIAL = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


class RecordingMotoServer:
    """moto's server (the app ThreadedMotoServer runs) behind a WSGI layer that records requests."""

    def __init__(self):
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        call = {
            "method": environ["REQUEST_METHOD"],
            "path": unquote(environ.get("PATH_INFO", "")),
            "query": environ.get("QUERY_STRING", ""),
            "target": environ.get("HTTP_X_AMZ_TARGET", ""),
        }
        match = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        call["key"], call["region"], call["service"] = match.groups() if match else (None, None, None)
        if call["target"].startswith("ElasticMapReduce."):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
            call["body"] = json.loads(body or b"{}")
        with self._lock:
            self.calls.append(call)
        return self.app(environ, start_response)

    def start(self) -> str:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self.app = DomainDispatcherApplication(create_backend_app)
        self.server = make_server("127.0.0.1", 0, self, threaded=True, request_handler=MotoRequestHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)

    def since(self, mark: int, key: str = AIRFLOW_KEY) -> list[dict]:
        with self._lock:
            return [c for c in self.calls[mark:] if c["key"] == key]


def cluster_of_run(run_id: str):
    found = [c for c in all_clusters() if c._tags.get("run_id") == emr_cluster.tag_value(run_id)]
    assert len(found) == 1, f"{len(found)} cluster(s) tagged run_id={run_id}"
    return found[0]


def iam_requests(calls: list[dict]) -> list[tuple[str, str, dict]]:
    """(IAM action, resource ARN, condition context) of every recorded call, implied actions included."""
    account = "123456789012"  # moto's default account
    out = []
    for call in calls:
        if call["service"] == "elasticmapreduce":
            action = "elasticmapreduce:" + call["target"].split(".", 1)[1]
            body = call["body"]
            if action == "elasticmapreduce:RunJobFlow":
                tags = {t["Key"]: t["Value"] for t in body.get("Tags", [])}
                context = {"aws:RequestedRegion": call["region"], **{f"aws:RequestTag/{k}": v for k, v in tags.items()}}
                out.append((action, "*", context))
                cluster_arn = f"arn:aws:elasticmapreduce:{call['region']}:{account}:cluster/j-NEW"
                out.append(
                    (
                        "elasticmapreduce:AddTags",
                        cluster_arn,
                        {f"elasticmapreduce:ResourceTag/{k}": v for k, v in tags.items()},
                    )
                )
                for role, service in (
                    (body["ServiceRole"], "elasticmapreduce.amazonaws.com"),
                    (body["JobFlowRole"], "ec2.amazonaws.com"),
                ):
                    out.append(
                        ("iam:PassRole", f"arn:aws:iam::{account}:role/{role}", {"iam:PassedToService": service})
                    )
                continue
            cluster_id = body.get("ClusterId") or body.get("JobFlowId") or body.get("JobFlowIds", [None])[0]
            cluster = next(c for c in all_clusters() if c.id == cluster_id)
            out.append(
                (
                    action,
                    f"arn:aws:elasticmapreduce:{call['region']}:{account}:cluster/{cluster_id}",
                    {f"elasticmapreduce:ResourceTag/{k}": v for k, v in cluster._tags.items()},
                )
            )
        elif call["service"] == "s3":
            bucket, _, key = call["path"].lstrip("/").partition("/")
            query = parse_qs(call["query"], keep_blank_values=True)
            if not key:
                action = (
                    "s3:GetBucketLocation"
                    if "location" in query
                    else "s3:ListBucket"
                    if call["method"] in ("GET", "HEAD")
                    else f"s3:unexpected {call['method']} ?{call['query']}"
                )
                out.append((action, f"arn:aws:s3:::{bucket}", {}))
            else:
                action = {
                    "GET": "s3:GetObject",
                    "HEAD": "s3:GetObject",
                    "PUT": "s3:PutObject",
                    "POST": "s3:PutObject",
                    "DELETE": "s3:DeleteObject",
                }[call["method"]]
                out.append((action, f"arn:aws:s3:::{bucket}/{key}", {}))
        else:
            out.append((f"{call['service']}:{call['target'] or call['method']}", "*", {}))
    return out


def allowing_statements(policy: dict, action: str, resource: str, context: dict) -> list[str]:
    """Sids of the Allow statements that grant the request (StringEquals / StringLike conditions)."""
    sids = []
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if action not in actions or not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        conditions = statement.get("Condition", {})
        ok = all(
            key in context
            and (context[key] == value if operator == "StringEquals" else fnmatch.fnmatchcase(context[key], value))
            for operator, pairs in conditions.items()
            for key, value in pairs.items()
        )
        if ok:
            sids.append(statement["Sid"])
    return sids


def start_local_emr(bucket: str, work_dir: Path, emr_class=LocalEmr):
    """A recording moto server with `bucket` created and a local EMR running its clusters' steps."""
    server = RecordingMotoServer()
    endpoint = server.start()
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    emr = emr_class(
        s3=s3, endpoint_url=endpoint, bucket=bucket, stack=emr_stack.locate(), work_dir=work_dir, region=REGION
    ).start()
    return server, endpoint, s3, emr


class EmrDeployment:
    """One moto server, bucket, local EMR and Airflow home: each scenario gets its own."""

    def __init__(self, tmp: Path, bucket: str, compute: str = "emr"):
        self.tmp, self.bucket = tmp, bucket
        self.server, self.endpoint, self.s3, self.emr = start_local_emr(bucket, tmp / "emr")
        self.env = runner.airflow_env(
            tmp / "airflow",
            extra={
                "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(self.endpoint, region=REGION, key=AIRFLOW_KEY),
                "FRUITS_COMPUTE": compute,
                **local_emr.dag_settings(poll_seconds=1),
                "FRUITS_TASK_RETRIES": "0",
            },
        )
        self.runs = 0
        self.landed = 0

    def close(self):
        self.emr.stop()
        self.server.stop()

    def land(self, **kwargs):
        self.landed += 1
        root = self.tmp / f"samples-{self.landed}"
        samples = generate_samples(root, labels=["Apple Red 1", "Banana"], n_classes=2, **kwargs)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.s3.upload_file(str(path), self.bucket, "landing/" + path.relative_to(root).as_posix())
        return samples

    def run(self, **conf) -> dict:
        self.runs += 1
        mark = len(self.server.calls)
        executed = len(self.emr.executed)
        result = runner.run_once(
            self.env, {**CONF, "bucket": self.bucket, **conf}, log_file=self.tmp / f"run-{self.runs}.log"
        )
        result["calls"] = self.server.since(mark)
        result["steps"] = [dataclasses.asdict(step) for step in self.emr.executed[executed:]]
        assert not self.emr.errors, self.emr.errors
        return result

    def read(self, uri: str) -> bytes:
        bucket, key = layout.split_s3_uri(uri)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def json(self, key: str, default=None):
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return default

    def ledger(self) -> dict:
        return self.json("state/ledger.json", {"batches": []})

    def table(self, prefix: str) -> pa.Table:
        """A parquet dataset of the bucket, its `path` column made bucket-relative (to compare deployments)."""
        parts = [
            pq.read_table(io.BytesIO(self.read(f"s3://{self.bucket}/{key}")))
            for key in self.keys(prefix)
            if key.endswith(".parquet")
        ]
        table = pa.concat_tables(parts, promote_options="default")
        relative = [p.split(f"s3://{self.bucket}/", 1)[-1] for p in table.column("path").to_pylist()]
        return table.set_column(table.schema.get_field_index("path"), "path", pa.array(relative))


def tasks_not_in(result: dict, *states: str) -> dict:
    return {t: s for t, s in result["tasks"].items() if s not in states}


@contextmanager
def emr_deployment(tmp_path_factory, bucket: str, compute: str = "emr"):
    deployment = EmrDeployment(tmp_path_factory.mktemp(bucket), bucket, compute)
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """A run asking for a region outside the EU, on a deployment of its own."""
    with emr_deployment(tmp_path_factory, "fruits-emr-refused") as deployment:
        deployment.land(per_class=1, seed=10)
        clusters_before = len(all_clusters())
        yield SimpleNamespace(
            deployment=deployment, result=deployment.run(region="us-east-1"), clusters_before=clusters_before
        )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A first run, then a second one on new images: each run's state is captured when it ends."""
    with emr_deployment(tmp_path_factory, "fruits-emr") as deployment:
        landed = deployment.land(per_class=2, broken=True, seed=11)
        first = deployment.run()
        first_ledger = deployment.ledger()
        deployment.land(per_class=2, start_index=300, seed=12)
        second = deployment.run(pca_k=3)
        yield SimpleNamespace(
            deployment=deployment, landed=landed, first=first, first_ledger=first_ledger, second=second
        )


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """A run whose featurize step fails for a real reason (a weights file that is not one), on a
    deployment of its own."""
    with emr_deployment(tmp_path_factory, "fruits-emr-failed") as deployment:
        deployment.land(per_class=1, seed=13)
        ledger_before = deployment.ledger()
        deployment.s3.put_object(Bucket=deployment.bucket, Key=BROKEN_WEIGHTS, Body=b"not an HDF5 file")
        result = deployment.run(weights=f"s3://{deployment.bucket}/{BROKEN_WEIGHTS}")
        yield SimpleNamespace(deployment=deployment, result=result, ledger_before=ledger_before)


@pytest.fixture(scope="module")
def local_twin(tmp_path_factory, two_runs):
    """The first EMR run's images, landed the same way, through the local backend (Spark 4, the venv's stack)."""
    with emr_deployment(tmp_path_factory, "fruits-emr-twin", compute="local") as deployment:
        deployment.land(per_class=2, broken=True, seed=11)
        yield SimpleNamespace(deployment=deployment, result=deployment.run())


def test_a_region_outside_the_eu_is_refused_before_anything_is_created(refused):
    deployment, result, clusters_before = refused.deployment, refused.result, refused.clusters_before
    assert result["state"] == "failed"
    assert result["tasks"]["emr.check_region"] == "failed"
    assert result["tasks"]["emr.create_cluster"] == "upstream_failed"
    assert result["tasks"]["emr.upload_code"] == "upstream_failed"
    assert "EMR region us-east-1 is outside the EU" in result["output"]
    assert "FRUITS_EMR_ALLOWED_REGIONS" in result["output"]  # a deployment setting, not a Param
    assert len(all_clusters()) == clusters_before
    assert not [c for c in result["calls"] if c["service"] == "elasticmapreduce"]
    assert not [
        c for c in result["calls"] if c["method"] == "PUT" and c["path"].startswith(f"/{deployment.bucket}/code/")
    ]
    assert deployment.ledger()["batches"] == []


def test_success_runs_both_steps_on_a_terminated_cluster_and_commits(two_runs):
    deployment, landed, result = two_runs.deployment, two_runs.landed, two_runs.first
    BUCKET = deployment.bucket
    assert result["state"] == "success" and not tasks_not_in(result, "success"), (
        tasks_not_in(result, "success"),
        result["output"][-5000:],
    )
    run_id = result["run_id"]
    cluster = cluster_of_run(run_id)
    assert cluster.state == "TERMINATED"

    # The cluster request, as moto's EMR API received it: EU region, guards, bootstrap, configurations.
    emr_calls = [c for c in result["calls"] if c["service"] == "elasticmapreduce"]
    assert emr_calls and {c["region"] for c in emr_calls} == {REGION}
    [run_job_flow] = [c["body"] for c in emr_calls if c["target"] == "ElasticMapReduce.RunJobFlow"]
    assert run_job_flow["LogUri"] == f"s3://{BUCKET}/emr-logs/" == cluster.log_uri
    assert run_job_flow["AutoTerminationPolicy"] == {"IdleTimeout": 1800}
    assert run_job_flow["ReleaseLabel"] == "emr-7.13.0"
    [bootstrap] = run_job_flow["BootstrapActions"]
    code_prefix = bootstrap["ScriptBootstrapAction"]["Path"].rsplit("/", 1)[0] + "/"
    assert re.fullmatch(rf"s3://{BUCKET}/code/[0-9a-f]{{16}}/", code_prefix)
    code_keys = deployment.keys(code_prefix.split(f"{BUCKET}/", 1)[1])
    assert sorted(k.rsplit("/", 1)[1] for k in code_keys) == sorted(code.code_bundle(SPARK_JOBS).files)
    defaults = next(c for c in run_job_flow["Configurations"] if c["Classification"] == "spark-defaults")
    assert defaults["Properties"]["spark.pyspark.python"] == emr_cluster.PYTHON
    assert {"project": "fruits-pipeline", "run_id": run_id}.items() <= cluster._tags.items()
    # Every EMR call of the run targets this cluster.
    ids = {
        c["body"].get("ClusterId") or c["body"].get("JobFlowId") or c["body"].get("JobFlowIds", [None])[0]
        for c in emr_calls
        if c["target"] != "ElasticMapReduce.RunJobFlow"
    }
    assert ids == {cluster.id}
    assert "ElasticMapReduce.TerminateJobFlows" in {c["target"] for c in emr_calls}

    # The steps, in order, with the s3:// URIs of the code, the manifest and the outputs.
    [batch] = two_runs.first_ledger["batches"]
    batch_id = batch["batch_id"]
    assert [(s["cluster_id"], s["state"]) for s in result["steps"]] == [(cluster.id, "COMPLETED")] * 2
    featurize_args, pca_args = (s["args"] for s in result["steps"])
    assert featurize_args[featurize_args.index("--py-files") + 1] == code_prefix + "fruits_spark.zip"
    assert featurize_args[7:] == [
        code_prefix + "featurize.py",
        "--manifest",
        f"s3://{BUCKET}/batches/{batch_id}/manifest.jsonl",
        "--output",
        f"s3://{BUCKET}/features/batch={batch_id}/",
        "--rejects",
        f"s3://{BUCKET}/rejects/batch={batch_id}/",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--model-cache",
        f"s3://{BUCKET}/models/converted/",
    ]
    run_prefix = f"s3://{BUCKET}/{layout.pca_prefix(run_id)}"
    assert pca_args[7:] == [
        code_prefix + "pca.py",
        "--features",
        f"s3://{BUCKET}/features/batch={batch_id}/",
        "--output",
        run_prefix + "vectors",
        "--model",
        run_prefix + "model",
        "--report",
        run_prefix + "report.json",
        "--allow-empty",
        "--variance",
        "0.95",
        "--refit",
        "auto",
        "--history-list",
        f"s3://{BUCKET}/batches/{batch_id}/pca_inputs.txt",
        "--refit-angle",
        "10.0",
        "--space-id",
        layout.safe_run_id(run_id),
    ]

    # Executed for real: EMR's Spark wrote the features through S3A, on a master with two executor JVMs.
    features_keys = [k for k in deployment.keys(f"features/batch={batch_id}/") if k.endswith(".parquet")]
    footers = [pq.read_metadata(io.BytesIO(deployment.read(f"s3://{BUCKET}/{k}"))).metadata for k in features_keys]
    assert features_keys and {f[b"org.apache.spark.version"] for f in footers} == {emr_stack.EMR_SPARK_VERSION.encode()}
    controller = gzip.decompress(deployment.read(result["steps"][0]["log_dir"] + "controller.gz")).decode()
    assert "local-cluster[2,1," in controller and "spark-submit" in controller

    # Validated and committed: the ledger and the run report.
    images, broken = len(landed.images), len(landed.broken)
    empty = sum(1 for p in landed.broken if p.stat().st_size == 0)  # rejected at planning, before the jobs
    assert empty and batch["planning_rejects"] == empty
    assert batch["run_id"] == run_id and batch["images"] + empty == len(landed.all_image_files()) == images + broken
    assert (batch["features_rows"], batch["rejects_rows"]) == (images, broken - empty) and broken > empty
    report = deployment.json(layout.report_key(run_id))
    assert report["status"] == "success" and report["compute"] == "emr"
    assert report["features_rows"] == report["pca_rows"] == images and report["rejects_rows"] == broken - empty
    assert report["planning_rejects"] == empty and report["planning_reject_reasons"] == {"empty file": empty}
    assert report["outputs"]["pca"] == run_prefix
    assert report["outputs"]["emr_logs"] == f"s3://{BUCKET}/emr-logs/{cluster.id}/"
    assert {"upload_code", "emr_startup", "featurize", "pca", "validate"} <= set(report["stage_seconds"])


def test_a_second_run_reuses_the_code_and_fits_pca_on_every_committed_batch(two_runs):
    deployment, first_run, result = two_runs.deployment, two_runs.first, two_runs.second
    BUCKET = deployment.bucket
    assert result["state"] == "success" and not tasks_not_in(result, "success"), tasks_not_in(result, "success")
    assert cluster_of_run(result["run_id"]).state == "TERMINATED"
    assert cluster_of_run(first_run["run_id"]) is not cluster_of_run(result["run_id"])
    puts = [c["path"] for c in result["calls"] if c["method"] == "PUT"]
    assert not [p for p in puts if p.startswith(f"/{BUCKET}/code/")]  # same sources: nothing uploaded
    first, second = deployment.ledger()["batches"]
    pca_args = result["steps"][1]["args"]
    list_uri = pca_args[pca_args.index("--history-list") + 1]
    features = deployment.read(list_uri).decode().split()
    assert features == [
        f"s3://{BUCKET}/features/batch={first['batch_id']}/",
        f"s3://{BUCKET}/features/batch={second['batch_id']}/",
    ]
    assert pca_args[pca_args.index("--k") + 1] == "3"  # the run's Param
    report = deployment.json(layout.report_key(result["run_id"]))
    assert report["pca_k"] == 3 and report["pca_rows"] == first["features_rows"] + second["features_rows"]


def test_a_failed_step_says_why_terminates_the_cluster_and_leaves_the_batch_uncommitted(failed):
    deployment, result, ledger_before = failed.deployment, failed.result, failed.ledger_before
    weights_uri = f"s3://{deployment.bucket}/{BROKEN_WEIGHTS}"
    assert result["state"] == "failed"
    tasks = result["tasks"]
    assert tasks["emr.wait_featurize"] == "failed" and tasks["emr.add_pca_step"] == "upstream_failed"
    assert tasks["emr.terminate_cluster"] == "success"
    assert tasks["emr.emr_outputs"] == tasks["validate"] == tasks["commit_batch"] == "upstream_failed"
    [step] = result["steps"]
    assert step["state"] == "FAILED" and step["exit_code"] == 1
    cluster = cluster_of_run(result["run_id"])
    assert cluster.state == "TERMINATED"
    assert deployment.ledger() == ledger_before
    # EMR's layout: the application master's container log holds the job's words, in stdout, where
    # spark-submit's PythonRunner puts the Python driver's stderr.
    job_error = f"featurize: error: cannot load the weights file {weights_uri}"
    container = f"emr-logs/{cluster.id}/containers/{step['application_id']}/"
    [driver_log] = [k for k in deployment.keys(container) if k.endswith("_01_000001/stdout.gz")]
    assert job_error in gzip.decompress(deployment.read(f"s3://{deployment.bucket}/{driver_log}")).decode()
    step_log = gzip.decompress(deployment.read(step["log_dir"] + "stderr.gz")).decode()
    assert f"Application {step['application_id']} finished with failed status" in step_log
    # ...and the task log and the run report say it in the job's own words, not "EMR job failed: None".
    assert job_error in result["output"]
    report = deployment.json(layout.report_key(result["run_id"]))  # the failed run's report
    assert (report["status"], report["failed_task"], report["committed"]) == ("failed", "emr.wait_featurize", None)
    assert report["error"].startswith(job_error)


def test_no_cluster_outlives_its_run(refused, two_runs, failed):
    runs = [two_runs.first["run_id"], two_runs.second["run_id"], failed.result["run_id"]]
    assert [cluster_of_run(run_id).state for run_id in runs] == ["TERMINATED"] * 3
    assert [c.id for c in all_clusters() if c.state != "TERMINATED"] == []


def test_the_documented_iam_policy_allows_every_call_and_nothing_unused(two_runs, failed):
    used_statements, denied, used, granted = set(), [], set(), set()
    for deployment, runs in (
        (two_runs.deployment, [two_runs.first, two_runs.second]),
        (failed.deployment, [failed.result]),
    ):
        policy = iam.airflow_role_policy(bucket=deployment.bucket, region=REGION)
        granted |= {a for s in policy["Statement"] for a in s["Action"]}
        for action, resource, context in iam_requests([call for run in runs for call in run["calls"]]):
            sids = allowing_statements(policy, action, resource, context)
            if not sids:
                denied.append((action, resource, context))
            used_statements.update(sids)
            used.add(action)
    assert denied == [], denied[:10]
    assert used_statements == {s["Sid"] for s in policy["Statement"]}  # least privilege: no unused statement
    assert granted == used


def test_the_emr_path_and_the_local_backend_give_the_same_features_rejects_and_pca_k(two_runs, local_twin):
    emr, local = two_runs.deployment, local_twin.deployment
    assert local_twin.result["state"] == "success", tasks_not_in(local_twin.result, "success")
    [emr_batch] = two_runs.first_ledger["batches"]
    [local_batch] = local.ledger()["batches"]
    emr_features = emr.table(f"features/batch={emr_batch['batch_id']}/").sort_by("path")
    local_features = local.table(f"features/batch={local_batch['batch_id']}/").sort_by("path")
    assert emr_features.column("path").to_pylist() == local_features.column("path").to_pylist()
    assert len(emr_features) == emr_batch["features_rows"] > 0
    a = np.array(emr_features.column("features").to_pylist(), dtype=np.float64)
    b = np.array(local_features.column("features").to_pylist(), dtype=np.float64)
    assert a.shape == b.shape and a.shape[1] == 1280
    relative = np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)
    assert relative.max() <= 1e-4, relative.max()
    rejects = [
        sorted(zip(t.column("path").to_pylist(), t.column("reason").to_pylist()))
        for t in (
            emr.table(f"rejects/batch={emr_batch['batch_id']}/"),
            local.table(f"rejects/batch={local_batch['batch_id']}/"),
        )
    ]
    assert rejects[0] == rejects[1] and rejects[0]
    reports = [d.json(layout.report_key(r["run_id"])) for d, r in ((emr, two_runs.first), (local, local_twin.result))]
    assert reports[0]["pca_k"] == reports[1]["pca_k"] and reports[0]["pca_rows"] == reports[1]["pca_rows"]
    assert (reports[0]["compute"], reports[1]["compute"]) == ("emr", "local")
