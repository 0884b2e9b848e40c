"""What one run costs as the history grows (`make bench-scale`): the orchestration tasks of a
1,000-image run on top of 10,000, 100,000 and 1,000,000 committed images.

    python benchmarks/scale.py [--histories 10000,100000,1000000] [--new 1000] [--batch-size 1000]
                               [--out benchmarks/results] [--work-dir DIR]

For each history, on a fresh embedded S3 server (moto), the bench writes the state a deployment
with that history has, as the pipeline reads it: the ledger (one record per committed batch of
`--batch-size` images, all cleared from the landing prefix) and the committed PCA run's state
(cumulative moments of the whole history, its basis, its contents index of 16 bytes per image,
its vectors list). It lands `--new` images, then runs the four orchestration tasks of the DAG,
each in a fresh Python process as an Airflow worker runs a task, and measures per task the S3
API calls, the seconds of the task's call and the process's peak resident memory:

    sense     wait_for_new_images' poke (pipeline.count_new_images)
    plan      plan_batch (claims the new images: one conditional copy each)
    validate  validate (streamed: this batch's features, rejects and PCA vectors)
    commit    commit_batch (ledger write, the images leave the landing prefix)

Between plan and validate it writes the new batch's features (synthetic: the history's
distribution, so no refit is due) and runs the real PCA stage as the local backend runs it: the
batch's PCA inputs list written to the bucket (`plan.write_pca_inputs`), then spark-submit of
`spark_jobs/pca.py` with the plan's arguments (`plan.pca_job`), on s3:// URIs through S3A with
the backend's settings. pca.py decides itself whether to refit; the decision is the one its
report states. `pca_input_bytes` is measured at the S3 server: the bytes of the object GETs it
served while pca.py ran, but for the run's own outputs (`pca_reads`: all of them, per prefix).

Not written: objects no orchestration step reads for a new batch (old batches' manifests, staged
copies, features and vectors, the per-key and per-content markers of old images: the new
batch's lookups miss them by key, which costs the same whatever the bucket holds on S3; moto's
own listing costs O(objects in the bucket) per page, so writing them would measure moto).

Writes <out>/scale-<timestamp>.json with `histories`: one object per history with
committed_images, s3_requests, seconds, worker_peak_mb, pca_input_bytes, pca_reads (requests and
bytes per key prefix), pca_committed_features_read (committed batches' features prefixes pca.py
read: none unless it refits), pca_refit and pca_decision (from pca.py's report), and per task details.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "fruits-scale"
LANDING = "landing/"
DIM = 1280
K = 50
LATENT = 64
SEED = 7
TASKS = ("sense", "plan", "validate", "commit")
LABELS = ("Apple", "Banana", "Kiwi", "Pear")


def log(message: str) -> None:
    print(f"[bench-scale] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the data's distribution


def generator():
    """A low-rank Gaussian model of 1280-d features: (mean, loadings, noise). History and new
    batch come from it, so the new batch does not move the PCA subspace (no refit due)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    mean = rng.normal(0.5, 0.1, DIM)
    loadings = rng.normal(size=(LATENT, DIM)) * (0.9 ** np.arange(LATENT))[:, None]
    return mean, loadings, 0.05


def sample(rows: int, seed: int):
    import numpy as np

    mean, loadings, noise = generator()
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, LATENT)) @ loadings + mean + rng.normal(0, noise, (rows, DIM))).astype(np.float32)


def history_moments(rows: int):
    """The moments `rows` images of the model have (population covariance, scaled as a scatter)."""
    import numpy as np

    from fruits_spark.moments import Moments

    mean, loadings, noise = generator()
    covariance = loadings.T @ loadings + noise**2 * np.eye(DIM)
    return Moments(rows=rows, min_dim=DIM, max_dim=DIM, labels=set(LABELS), mean=mean, scatter=covariance * (rows - 1))


# --------------------------------------------------------------------------- seeding a history


def seed_history(s3, committed: int, batch_size: int) -> None:
    """The ledger and the committed PCA state of a deployment that has `committed` images."""
    import numpy as np

    from fruits import layout
    from fruits.contract import PcaOutputs
    from fruits.core import ledger, pca_policy
    from fruits_spark import pca_report, pca_state

    prefix = "pca/run=history/"
    outputs = PcaOutputs(layout.s3_uri(BUCKET, prefix))
    batch_ids = [f"b{i:015d}" for i in range(committed // batch_size)]
    stats = history_moments(committed)
    eigenvalues, vectors = np.linalg.eigh(stats.covariance())
    components = np.ascontiguousarray(vectors[:, ::-1][:, :K])
    ratios = (eigenvalues[::-1] / eigenvalues.sum()).tolist()
    report = pca_report.build_report(
        rows=committed,
        input_dim=DIM,
        k=K,
        ratios=ratios,
        inputs=[],
        output="",
        model=outputs.model,
        target_variance=None,
        labels=len(LABELS),
        seconds=0.0,
        plots={},
    )
    report.update(
        mode="refit",
        space_id="history",
        fitted_rows=committed,
        refit={"reason": "seeded history", "max_angle_degrees": None},
    )
    digests = np.sort(np.frombuffer(np.random.default_rng(SEED).bytes(16 * committed), dtype="S16"))
    files = {
        outputs.moments: pca_state.moments_to_bytes(stats),
        outputs.basis: pca_state.basis_to_bytes(pca_state.Basis("history", stats.mean, components)),
        outputs.contents: pca_state.digests_to_bytes(digests),
        outputs.vectors_list: pca_state.vectors_list_text(
            [f"{outputs.vectors}/batch={b}/" for b in batch_ids]
        ).encode(),
        outputs.report: pca_report.report_json(report),
    }
    for uri, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=layout.split_s3_uri(uri)[1], Body=body)
    records = []
    for batch_id in batch_ids:
        record = ledger.batch_record(
            batch_id=batch_id,
            run_id=f"scheduled__{batch_id}",
            images=batch_size,
            features_rows=batch_size,
            rejects_rows=0,
            planning_rejects=0,
        )
        record["landing_cleared"] = True
        records.append(record)
    state = {"version": ledger.VERSION, "batches": records, "pca": pca_policy.state_of(BUCKET, prefix, report)}
    ledger.validate_schema(state)
    s3.put_object(Bucket=BUCKET, Key=layout.LEDGER_KEY, Body=json.dumps(state, indent=2).encode())


def land(s3, count: int) -> None:
    """`count` new objects under the landing prefix (small bodies: no step decodes them)."""
    for i in range(count):
        body = hashlib.sha256(f"image {i}".encode()).digest() * 64
        s3.put_object(Bucket=BUCKET, Key=f"{LANDING}{LABELS[i % len(LABELS)]}/img_{i:07d}.jpg", Body=body)


def write_features(s3, batch: dict) -> None:
    """What featurize.py leaves for the batch: features in the history's distribution, no rejects."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fruits import layout
    from fruits.core import manifest

    body = s3.get_object(Bucket=BUCKET, Key=layout.manifest_key(batch["batch_id"]))["Body"].read().decode()
    entries = manifest.entries(body, BUCKET)
    matrix = sample(len(entries), seed=SEED + 1)
    table = pa.table(
        {
            "path": [e.source for e in entries],
            "label": [e.label for e in entries],
            "features": pa.array(list(matrix), type=pa.list_(pa.float32())),
            "width": pa.array([100] * len(entries), pa.int32()),
            "height": pa.array([100] * len(entries), pa.int32()),
            "size_bytes": pa.array([e.size for e in entries], pa.int64()),
            "sha256": [hashlib.sha256(e.source.encode()).hexdigest() for e in entries],
        }
    )
    empty = pa.table(
        {
            "path": pa.array([], pa.string()),
            "label": pa.array([], pa.string()),
            "reason": pa.array([], pa.string()),
            "size_bytes": pa.array([], pa.int64()),
        }
    )
    for prefix, part in (
        (layout.features_prefix(batch["batch_id"]), table),
        (layout.rejects_prefix(batch["batch_id"]), empty),
    ):
        sink = io.BytesIO()
        pq.write_table(part, sink)
        s3.put_object(Bucket=BUCKET, Key=prefix + "part-00000.parquet", Body=sink.getvalue())


def run_pca_stage(context: dict, batch: dict, reads) -> dict:
    """The local backend's PCA stage for real: the batch's PCA inputs list written to the bucket,
    the plan's PCA job (K components; pca.py decides itself whether to refit) spark-submitted with
    its own arguments, on s3:// URIs, through S3A with the backend's own settings. Returns what the
    server sent while it ran (`reads`: an `s3_reads.ObjectReads`) and the decision pca.py reported."""
    from fruits import contract, layout, plan
    from fruits.backends.local.operators import s3a_submit_settings
    from fruits.backends.local.tasks import spark_conf, spark_env
    from fruits.settings import Settings

    settings = Settings(spark_driver_memory="2g")
    bucket = task_bucket(context)
    planned = contract.Batch.from_xcom(batch)
    run_id = context["run_id"]
    plan.write_pca_inputs(bucket, planned)
    job = plan.pca_job(planned, run_id, pca_k=K, pca_variance=settings.pca_variance)
    conf, env = s3a_submit_settings(settings.aws_conn_id, spark_conf(settings), spark_env())
    command = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        "local[2]",
        "--name",
        job.app_name,
        *[item for key, value in conf.items() for item in ("--conf", f"{key}={value}")],
        str(ROOT / "spark_jobs" / job.script),
        *job.args,
    ]
    started = time.perf_counter()
    with reads.recording() as read:
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"pca.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = json.loads(bucket.read_text(bucket.key_of(layout.pca_outputs(BUCKET, run_id).report)))
    return {
        "reads": dict(sorted(read.items())),
        "mode": report["mode"],
        "decision": report["refit"],
        "history_datasets": report["history_datasets"],
        "pca_seconds": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------------- one task in its own process


def task_bucket(context: dict):
    from fruits.storage import Bucket

    return Bucket.connect("aws_default", BUCKET)


def count_api_calls() -> dict:
    """Count every AWS API call this process makes (a paginated listing: one per page)."""
    from botocore.client import BaseClient

    counts = {"calls": 0}
    original = BaseClient._make_api_call

    def counted(self, operation_name, api_params):
        counts["calls"] += 1
        return original(self, operation_name, api_params)

    BaseClient._make_api_call = counted
    return counts


def run_task(name: str, context: dict) -> dict:
    """Body of a task process: import what the task imports, then time the task's call alone."""
    counts = count_api_calls()
    from fruits.contract import Batch
    from fruits.core import pipeline

    bucket = task_bucket(context)
    bucket.client()  # the client is built at import time of a task's first S3 call; not the task's work
    before = counts["calls"]
    started = time.perf_counter()
    if name == "sense":
        result = pipeline.count_new_images(bucket, LANDING)
    elif name == "plan":
        result = pipeline.plan(bucket, LANDING).to_xcom()
    elif name == "validate":
        result = pipeline.validate(bucket, Batch.from_xcom(context["batch"]), context["pca_prefix"])
    elif name == "commit":
        result = pipeline.commit(bucket, Batch.from_xcom(context["batch"]), context["validation"], context["run_id"])
    else:
        raise SystemExit(f"unknown task {name}")
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "s3_requests": counts["calls"] - before,
        "peak_mb": peak_mb(),
        "result": result,
    }


def peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss
    across execve, so a process started by a big parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def task_process(name: str, context: dict, env: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(context, handle)
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__)), "--task", name, "--context", handle.name],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
    finally:
        os.unlink(handle.name)
    if proc.returncode:
        raise SystemExit(f"task {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one history


def measure_history(committed: int, args, work: Path) -> dict:
    from fruits import layout
    from fruits_dev import runner, s3_reads, s3_server

    reads = s3_reads.ObjectReads()
    # Always moto's server, whatever FRUITS_S3_ENDPOINT says: the bench resets it and counts what it serves.
    with s3_server.embedded_endpoint(wrap=reads.wrap) as endpoint:
        # moto's backends live in this process, shared by every server it starts: start from nothing.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
        s3 = s3_server.client(endpoint)
        s3_server.ensure_bucket(s3, BUCKET)
        env = {
            **os.environ,
            "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(endpoint),
            "AIRFLOW_HOME": str(work / "airflow"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        os.environ.update({k: env[k] for k in ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_HOME")})
        started = time.perf_counter()
        seed_history(s3, committed, args.batch_size)
        land(s3, args.new)
        log(
            f"{committed:,} committed images: state seeded, {args.new} new images landed "
            f"in {time.perf_counter() - started:.1f} s"
        )
        context = {"run_id": "manual__scale"}
        tasks = {}
        tasks["sense"] = task_process("sense", context, env)
        if tasks["sense"]["result"] != args.new:
            raise SystemExit(f"the sensor saw {tasks['sense']['result']} new images, not {args.new}")
        tasks["plan"] = task_process("plan", context, env)
        context["batch"] = tasks["plan"]["result"]
        write_features(s3, context["batch"])
        pca = run_pca_stage(context, context["batch"], reads)
        context["pca_prefix"] = layout.pca_prefix(context["run_id"])
        tasks["validate"] = task_process("validate", context, env)
        context["validation"] = tasks["validate"]["result"]
        tasks["commit"] = task_process("commit", context, env)
        for name, rec in tasks.items():
            log(
                f"  {name:8s} {rec['s3_requests']:6d} S3 requests  {rec['seconds']:7.2f} s  "
                f"peak {rec['peak_mb']:.0f} MB"
            )
        # its inputs: everything it read but its own outputs (it reads back a sample of the vectors it wrote)
        own = layout.pca_prefix(context["run_id"])
        input_bytes = sum(r["bytes"] for prefix, r in pca["reads"].items() if prefix != own)
        new_features = layout.features_prefix(context["batch"]["batch_id"])
        committed_features = [p for p in pca["reads"] if p.startswith("features/") and p != new_features]
        log(
            f"  pca stage: read {input_bytes:,} bytes ({pca['mode']}: {pca['decision']['reason']}, "
            f"{pca['pca_seconds']} s)"
        )
        for prefix, read in pca["reads"].items():
            log(f"    {prefix:40s} {read['requests']:4d} GETs {read['bytes']:12,d} bytes")
        for rec in tasks.values():
            rec.pop("result", None)
        return {
            "committed_images": committed,
            "s3_requests": sum(t["s3_requests"] for t in tasks.values()),
            "seconds": round(sum(t["seconds"] for t in tasks.values()), 3),
            "worker_peak_mb": max(t["peak_mb"] for t in tasks.values()),
            "pca_input_bytes": input_bytes,
            "pca_reads": pca["reads"],
            "pca_batch_features": new_features,
            "pca_committed_features_read": committed_features,
            "pca_refit": pca["mode"] == "refit",
            "pca_decision": pca["decision"],
            "pca_history_datasets": pca["history_datasets"],
            "pca_seconds": pca["pca_seconds"],
            "tasks": tasks,
        }


def growth(histories: list[dict], field: str) -> float | None:
    first, last = histories[0][field], histories[-1][field]
    return round(last / first, 3) if first else None


def table(result: dict) -> str:
    rows = [
        "| committed images | S3 requests | seconds | worker peak MB | PCA input bytes | PCA |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for h in result["histories"]:
        rows.append(
            f"| {h['committed_images']:,} | {h['s3_requests']:,} | {h['seconds']:.2f} | "
            f"{h['worker_peak_mb']:.0f} | {h['pca_input_bytes']:,} | "
            f"{'refit' if h['pca_refit'] else 'new batch projected'} |"
        )
    t = result["targets"]
    rows += [
        "",
        f"growth from {result['histories'][0]['committed_images']:,} to "
        f"{result['histories'][-1]['committed_images']:,}: S3 requests x{t['s3_requests_growth']}, "
        f"seconds x{t['seconds_growth']} (target <= 1.5 each); peak {t['worker_peak_mb_max']:.0f} MB "
        f"(target < 300)",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", default="10000,100000,1000000")
    parser.add_argument("--new", type=int, default=1000, help="images of the measured run (default 1000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="images per committed batch of the history")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--work-dir", help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.task:
        print(json.dumps(run_task(args.task, json.loads(Path(args.context).read_text())), default=str))
        return 0
    histories = [int(h) for h in args.histories.split(",") if h.strip()]
    if any(h < args.batch_size or h % args.batch_size for h in histories):
        parser.error("every history must be a positive multiple of --batch-size")
    started = dt.datetime.now()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="fruits-scale-"))
    try:
        measured = [measure_history(h, args, work) for h in histories]
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "new_images": args.new,
        "batch_size": args.batch_size,
        "histories": measured,
    }
    result["targets"] = {
        "s3_requests_growth": growth(measured, "s3_requests"),
        "seconds_growth": growth(measured, "seconds"),
        "worker_peak_mb_max": max(h["worker_peak_mb"] for h in measured),
        "pca_reads_new_batch_only": all(not h["pca_refit"] and not h["pca_committed_features_read"] for h in measured),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"scale-{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
