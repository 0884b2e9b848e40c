"""The EMR backend end to end on moto: whole DAG runs, each scenario on a deployment of its own.

No AWS here. Each scenario starts a moto server (EMR + S3) inside the test process and runs the
DAG in a child process (`runner.run_once`), which talks to it over HTTP exactly as it would to
AWS. moto accepts clusters and steps but never runs a step, so a thread of this process plays
EMR's part: it takes each cluster's steps in order, checks that the script and the `--py-files`
zip exist in S3, parses the arguments with the jobs' own parsers, writes the outputs the real
jobs would write at the URIs the step names (features and rejects parquet, PCA vectors and
report), and marks the step COMPLETED, or FAILED when a test asks for it. Every request the DAG
makes is recorded, to check regions, the cluster request and the IAM policy.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import re
import threading
import traceback
import zipfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SPARK_JOBS, load_job, synthetic_wheelhouse
from fruits import contract, layout
from fruits.backends.emr import cluster as emr_cluster
from fruits.backends.emr import code, iam
from fruits_dev import runner
from fruits_dev.samples import generate_samples

pytestmark = pytest.mark.spark

REGION = "eu-west-3"
AIRFLOW_KEY = "AKIDAIRFLOWROLE"  # the DAG's credentials; the test's own client uses another key
CONF = {"weights": "none", "image_size": 32, "sensor_timeout": 0}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")
CREDENTIAL = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


class RecordingMotoServer:
    """moto's server (the app ThreadedMotoServer runs) behind a WSGI layer that records requests."""

    def __init__(self):
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        call = {"method": environ["REQUEST_METHOD"], "path": unquote(environ.get("PATH_INFO", "")),
                "query": environ.get("QUERY_STRING", ""), "target": environ.get("HTTP_X_AMZ_TARGET", "")}
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


def all_clusters() -> list:
    from moto.emr.models import emr_backends

    return [cluster for account in list(dict.values(emr_backends)) for backend in list(dict.values(account))
            for cluster in list(backend.clusters.values())]


def cluster_of_run(run_id: str):
    found = [c for c in all_clusters() if c._tags.get("run_id") == emr_cluster.tag_value(run_id)]
    assert len(found) == 1, f"{len(found)} cluster(s) tagged run_id={run_id}"
    return found[0]


class StepDriver:
    """Plays EMR's part: runs each cluster's steps in order, writing what the real jobs write."""

    def __init__(self, s3, bucket: str):
        self.s3, self.bucket = s3, bucket
        self.fail: set[str] = set()  # scripts ("featurize.py", "pca.py") whose steps must fail
        self.executed: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emr-step-driver", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self):
        while not self._stop.wait(0.2):
            try:
                for cluster in all_clusters():
                    # moto's state is one per process: drive only this deployment's clusters.
                    if cluster.state not in ("WAITING", "RUNNING") or not self.owns(cluster):
                        continue
                    pending = [s for s in cluster.steps if s.state not in TERMINAL]
                    if pending:  # EMR runs the steps one after the other (StepConcurrencyLevel 1)
                        self._execute(cluster, pending[0])
            except Exception:  # noqa: BLE001 - reported by the tests
                self.errors.append(traceback.format_exc())

    def owns(self, cluster) -> bool:
        return (cluster.log_uri or "").startswith(f"s3://{self.bucket}/")

    def _execute(self, cluster, step):
        step.state, step.start_date_time = "RUNNING", datetime.now(timezone.utc)
        args = list(step.args)
        record = {"cluster_id": cluster.id, "name": step.name, "jar": step.jar, "args": args}
        try:
            problem = self._run(args)
        except Exception as exc:  # noqa: BLE001 - a crash of the "job" is a failed step
            problem = f"{type(exc).__name__}: {exc}"
        step.end_date_time = datetime.now(timezone.utc)
        step.state = "FAILED" if problem else "COMPLETED"
        step.last_state_change_reason = problem
        record.update(state=step.state, problem=problem)
        self.executed.append(record)
        if not [s for s in cluster.steps if s.state not in TERMINAL]:
            cluster.state = "WAITING"

    def _exists(self, uri: str) -> bool:
        bucket, key = layout.split_s3_uri(uri)
        return bool(self.s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))

    def _run(self, args: list[str]) -> str | None:
        """spark-submit [options] script job-args: what EMR would do, minus Spark."""
        if args[:1] != ["spark-submit"]:
            return f"not a spark-submit step: {args[:1]}"
        options, i = {}, 1
        while args[i].startswith("--"):
            options[args[i]] = args[i + 1]
            i += 2
        script, job_args = args[i], args[i + 1:]
        for uri in (script, options.get("--py-files", "")):
            if not uri.startswith("s3://") or not self._exists(uri):
                return f"not found in S3: {uri!r}"
        bucket, key = layout.split_s3_uri(options["--py-files"])
        archive = zipfile.ZipFile(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        if "fruits_spark/__init__.py" not in archive.namelist():
            return "--py-files does not hold the fruits_spark package"
        job = script.rsplit("/", 1)[-1]
        if job in self.fail:
            return f"{job} failed (injected by the test)"
        if job == "featurize.py":
            return self._featurize(load_job("featurize").parse_args(job_args))
        if job == "pca.py":
            return self._pca(load_job("pca").parse_args(job_args))
        return f"unknown script {script}"

    def _read(self, uri: str) -> bytes:
        bucket, key = layout.split_s3_uri(uri)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def _write_parquet(self, uri: str, table) -> None:
        bucket, key = layout.split_s3_uri(uri.rstrip("/") + "/part-00000.parquet")
        sink = io.BytesIO()
        pq.write_table(table, sink)
        self.s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())

    def _featurize(self, args) -> None:
        from PIL import Image

        features, rejects = [], []
        entries = [json.loads(line) for line in self._read(args.manifest).decode().split("\n") if line.strip()]
        for entry in entries:  # manifest.jsonl: `source` is the row's path, `read` where the bytes are
            uri, label = entry["source"], entry["label"]
            bucket, key = layout.split_s3_uri(entry["read"])
            if not contract.is_image_key(key):
                rejects.append((uri, label, "unsupported file type (expected .jpg, .jpeg or .png)", None))
                continue
            try:
                data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                rejects.append((uri, label, "file not found", None))
                continue
            try:
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
                    image.convert("RGB")
            except Exception as exc:  # noqa: BLE001
                rejects.append((uri, label, f"cannot decode image: {exc}", len(data)))
                continue
            digest = hashlib.sha256(data).hexdigest()
            rng = np.random.default_rng(int(digest[:16], 16))
            features.append((uri, label, rng.random(1280, dtype=np.float32), width, height, len(data), digest))
        self._write_parquet(args.output, pa.table({
            "path": [f[0] for f in features], "label": [f[1] for f in features],
            "features": pa.array([f[2].tolist() for f in features], pa.list_(pa.float32())),
            "width": pa.array([f[3] for f in features], pa.int32()),
            "height": pa.array([f[4] for f in features], pa.int32()),
            "size_bytes": pa.array([f[5] for f in features], pa.int64()),
            "sha256": [f[6] for f in features]}))
        self._write_parquet(args.rejects, pa.table({
            "path": [r[0] for r in rejects], "label": [r[1] for r in rejects], "reason": [r[2] for r in rejects],
            "size_bytes": pa.array([r[3] for r in rejects], pa.int64())}))

    def _pca(self, args) -> str | None:
        """pca.py as a full refit every time (numpy SVD): every listed batch re-projected, with the
        state files, the vectors list and the report fields of an incremental run."""
        from fruits_spark import pca_report, pca_state
        from fruits_spark.moments import Moments

        if args.features_list:
            args.features = self._read(args.features_list).decode().split()
        history = self._read(args.history_list).decode().split() if args.history_list else []
        new = {u.rstrip("/") for u in args.features}
        tables, batches = [], []
        for uri in [u for u in history if u.rstrip("/") not in new] + args.features:
            if not self._exists(uri):
                return f"pca: error: features not found: {uri}"
            bucket, prefix = layout.split_s3_uri(uri)
            for obj in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                if obj["Key"].endswith(".parquet"):
                    table = pq.read_table(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()),
                                          columns=["path", "label", "features"])
                    tables.append(table)
                    batches += [pca_state.batch_id_of(uri, "input")] * table.num_rows
        frame = pa.concat_tables(tables)
        matrix = np.array(frame.column("features").to_pylist(), dtype=np.float64).reshape(frame.num_rows, -1)
        centred = matrix - matrix.mean(axis=0)
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        ratios = (singular ** 2 / max((singular ** 2).sum(), 1e-300)).tolist()
        k = args.k or pca_report.smallest_k_for_variance(ratios, args.variance)
        projected = centred @ components[:k].T
        listed = []
        for batch_id in dict.fromkeys(batches):
            rows = [i for i, b in enumerate(batches) if b == batch_id]
            self._write_parquet(f"{args.output}/batch={batch_id}/", pa.table({
                "path": frame.column("path").take(rows), "label": frame.column("label").take(rows),
                "pca_features": pa.array(projected[rows].tolist(), pa.list_(pa.float64()))}))
            listed.append(f"{args.vectors_uri}/batch={batch_id}/")
        stats = Moments(rows=len(matrix), min_dim=matrix.shape[1], max_dim=matrix.shape[1],
                        mean=matrix.mean(axis=0), scatter=centred.T @ centred)
        basis = pca_state.Basis(args.space_id, stats.mean, np.ascontiguousarray(components[:k].T))
        for name, data in ((pca_state.MOMENTS, pca_state.moments_to_bytes(stats)),
                           (pca_state.BASIS, pca_state.basis_to_bytes(basis)),
                           (pca_state.CONTENTS, b""),
                           (pca_state.VECTORS_LIST, pca_state.vectors_list_text(listed).encode())):
            bucket, key = layout.split_s3_uri(f"{args.state_dir}/{name}")
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        report = pca_report.build_report(
            rows=frame.num_rows, input_dim=matrix.shape[1], k=k, ratios=ratios, inputs=args.features,
            output=args.output, model=args.model, target_variance=args.variance,
            labels=len(set(frame.column("label").to_pylist())), seconds=0.1, plots={})
        report.update(mode="refit", space_id=args.space_id, fitted_rows=frame.num_rows,
                      refit={"reason": "the fake EMR always refits", "max_angle_degrees": None})
        bucket, key = layout.split_s3_uri(args.report)
        self.s3.put_object(Bucket=bucket, Key=key, Body=pca_report.report_json(report))
        return None


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
                context = {"aws:RequestedRegion": call["region"],
                           **{f"aws:RequestTag/{k}": v for k, v in tags.items()}}
                out.append((action, "*", context))
                cluster_arn = f"arn:aws:elasticmapreduce:{call['region']}:{account}:cluster/j-NEW"
                out.append(("elasticmapreduce:AddTags", cluster_arn,
                            {f"elasticmapreduce:ResourceTag/{k}": v for k, v in tags.items()}))
                for role, service in ((body["ServiceRole"], "elasticmapreduce.amazonaws.com"),
                                      (body["JobFlowRole"], "ec2.amazonaws.com")):
                    out.append(("iam:PassRole", f"arn:aws:iam::{account}:role/{role}",
                                {"iam:PassedToService": service}))
                continue
            cluster_id = body.get("ClusterId") or body.get("JobFlowId") or body.get("JobFlowIds", [None])[0]
            cluster = next(c for c in all_clusters() if c.id == cluster_id)
            out.append((action, f"arn:aws:elasticmapreduce:{call['region']}:{account}:cluster/{cluster_id}",
                        {f"elasticmapreduce:ResourceTag/{k}": v for k, v in cluster._tags.items()}))
        elif call["service"] == "s3":
            bucket, _, key = call["path"].lstrip("/").partition("/")
            query = parse_qs(call["query"], keep_blank_values=True)
            if not key:
                action = ("s3:GetBucketLocation" if "location" in query
                          else "s3:ListBucket" if call["method"] in ("GET", "HEAD")
                          else f"s3:unexpected {call['method']} ?{call['query']}")
                out.append((action, f"arn:aws:s3:::{bucket}", {}))
            else:
                action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject",
                          "POST": "s3:PutObject", "DELETE": "s3:DeleteObject"}[call["method"]]
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
        ok = all(key in context and (context[key] == value if operator == "StringEquals"
                                     else fnmatch.fnmatchcase(context[key], value))
                 for operator, pairs in conditions.items() for key, value in pairs.items())
        if ok:
            sids.append(statement["Sid"])
    return sids


def start_fake_emr(bucket: str, driver_class=None):
    """A recording moto server with `bucket` created and a step driver playing EMR for it."""
    server = RecordingMotoServer()
    endpoint = server.start()
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    driver = (driver_class or StepDriver)(s3, bucket)
    driver.start()
    return server, endpoint, s3, driver


class EmrDeployment:
    """One moto server, bucket, step driver and Airflow home: each scenario gets its own."""

    def __init__(self, tmp: Path, bucket: str):
        self.tmp, self.bucket = tmp, bucket
        self.server, self.endpoint, self.s3, self.driver = start_fake_emr(bucket)
        synthetic = synthetic_wheelhouse(tmp / "emr-code")  # tiny wheels instead of the real ~1 GB wheelhouse
        self.env = runner.airflow_env(tmp / "airflow", extra={
            "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(self.endpoint, region=REGION, key=AIRFLOW_KEY),
            "FRUITS_SPARK_JOBS_DIR": str(synthetic["spark_jobs"]),
            "FRUITS_EMR_WHEELHOUSE": str(synthetic["wheelhouse"]),
            "FRUITS_COMPUTE": "emr",
            "FRUITS_EMR_POLL_SECONDS": "1",
            "FRUITS_TASK_RETRIES": "0",
            "FRUITS_WORK_DIR": str(tmp / "work"),
        })
        self.runs = 0
        self.landed = 0

    def close(self):
        self.driver.stop()
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
        executed = len(self.driver.executed)
        result = runner.run_once(self.env, {**CONF, "bucket": self.bucket, **conf}, log_file=self.tmp / f"run-{self.runs}.log")
        result["calls"] = self.server.since(mark)
        result["steps"] = self.driver.executed[executed:]
        assert not self.driver.errors, self.driver.errors
        return result

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


def tasks_not_in(result: dict, *states: str) -> dict:
    return {t: s for t, s in result["tasks"].items() if s not in states}


@contextmanager
def emr_deployment(tmp_path_factory, bucket: str):
    deployment = EmrDeployment(tmp_path_factory.mktemp(bucket), bucket)
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
        yield SimpleNamespace(deployment=deployment, result=deployment.run(region="us-east-1"),
                              clusters_before=clusters_before)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A first run, then a second one on new images: each run's state is captured when it ends."""
    with emr_deployment(tmp_path_factory, "fruits-emr") as deployment:
        landed = deployment.land(per_class=2, broken=True, seed=11)
        first = deployment.run()
        first_ledger = deployment.ledger()
        deployment.land(per_class=2, start_index=300, seed=12)
        second = deployment.run(pca_k=3)
        yield SimpleNamespace(deployment=deployment, landed=landed, first=first, first_ledger=first_ledger,
                              second=second)


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """A run whose PCA step fails, on a deployment of its own."""
    with emr_deployment(tmp_path_factory, "fruits-emr-failed") as deployment:
        deployment.land(per_class=1, seed=13)
        ledger_before = deployment.ledger()
        deployment.driver.fail = {"pca.py"}
        yield SimpleNamespace(deployment=deployment, result=deployment.run(), ledger_before=ledger_before)


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
    assert not [c for c in result["calls"] if c["method"] == "PUT" and c["path"].startswith(f"/{deployment.bucket}/code/")]
    assert deployment.ledger()["batches"] == []


def test_success_runs_both_steps_on_a_terminated_cluster_and_commits(two_runs):
    deployment, landed, result = two_runs.deployment, two_runs.landed, two_runs.first
    BUCKET = deployment.bucket
    assert result["state"] == "success" and not tasks_not_in(result, "success"), \
        (tasks_not_in(result, "success"), result["output"][-5000:])
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
    ids = {c["body"].get("ClusterId") or c["body"].get("JobFlowId") or c["body"].get("JobFlowIds", [None])[0]
           for c in emr_calls if c["target"] != "ElasticMapReduce.RunJobFlow"}
    assert ids == {cluster.id}
    assert "ElasticMapReduce.TerminateJobFlows" in {c["target"] for c in emr_calls}

    # The steps, in order, with the s3:// URIs of the code, the manifest and the outputs.
    [batch] = two_runs.first_ledger["batches"]
    batch_id = batch["batch_id"]
    assert [(s["cluster_id"], s["state"]) for s in result["steps"]] == [(cluster.id, "COMPLETED")] * 2
    featurize_args, pca_args = (s["args"] for s in result["steps"])
    assert featurize_args[featurize_args.index("--py-files") + 1] == code_prefix + "fruits_spark.zip"
    assert featurize_args[7:] == [
        code_prefix + "featurize.py", "--manifest", f"s3://{BUCKET}/batches/{batch_id}/manifest.jsonl",
        "--output", f"s3://{BUCKET}/features/batch={batch_id}/",
        "--rejects", f"s3://{BUCKET}/rejects/batch={batch_id}/",
        "--weights", "none", "--image-size", "32", "--model-cache", f"s3://{BUCKET}/models/converted/"]
    run_prefix = f"s3://{BUCKET}/{layout.pca_prefix(run_id)}"
    assert pca_args[7:] == [
        code_prefix + "pca.py", "--features", f"s3://{BUCKET}/features/batch={batch_id}/",
        "--output", run_prefix + "vectors", "--model", run_prefix + "model", "--report", run_prefix + "report.json",
        "--allow-empty", "--variance", "0.95", "--refit", "auto",
        "--history-list", f"s3://{BUCKET}/batches/{batch_id}/pca_inputs.txt", "--refit-angle", "10.0",
        "--space-id", layout.safe_run_id(run_id)]

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
    features = deployment.driver._read(list_uri).decode().split()
    assert features == [f"s3://{BUCKET}/features/batch={first['batch_id']}/",
                        f"s3://{BUCKET}/features/batch={second['batch_id']}/"]
    assert pca_args[pca_args.index("--k") + 1] == "3"  # the run's Param
    report = deployment.json(layout.report_key(result["run_id"]))
    assert report["pca_k"] == 3 and report["pca_rows"] == first["features_rows"] + second["features_rows"]


def test_a_failed_step_still_terminates_the_cluster_and_leaves_the_batch_uncommitted(failed):
    deployment, result, ledger_before = failed.deployment, failed.result, failed.ledger_before
    assert result["state"] == "failed"
    tasks = result["tasks"]
    assert tasks["emr.wait_featurize"] == "success" and tasks["emr.wait_pca"] == "failed"
    assert tasks["emr.terminate_cluster"] == "success"
    assert tasks["emr.emr_outputs"] == tasks["validate"] == tasks["commit_batch"] == "upstream_failed"
    assert [s["state"] for s in result["steps"]] == ["COMPLETED", "FAILED"]
    cluster = cluster_of_run(result["run_id"])
    assert cluster.state == "TERMINATED"
    assert "EMR job failed" in result["output"] or "Error while running job" in result["output"]
    assert deployment.ledger() == ledger_before
    report = deployment.json(layout.report_key(result["run_id"]))  # the failed run's report
    assert (report["status"], report["failed_task"], report["committed"]) == ("failed", "emr.wait_pca", None)
    assert report["error"]


def test_no_cluster_outlives_its_run(refused, two_runs, failed):
    runs = [two_runs.first["run_id"], two_runs.second["run_id"], failed.result["run_id"]]
    assert [cluster_of_run(run_id).state for run_id in runs] == ["TERMINATED"] * 3
    assert [c.id for c in all_clusters() if c.state != "TERMINATED"] == []


def test_the_documented_iam_policy_allows_every_call_and_nothing_unused(two_runs, failed):
    used_statements, denied, used, granted = set(), [], set(), set()
    for deployment, runs in ((two_runs.deployment, [two_runs.first, two_runs.second]),
                             (failed.deployment, [failed.result])):
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
