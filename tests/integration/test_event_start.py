"""The event-driven start end to end under a real Airflow (fruits_dev.airflow_stack with
FRUITS_TRIGGER=sqs): moto delivers the landing prefix's S3 notifications to an SQS queue, the
triggerer's AssetWatcher receives them and the scheduler starts an asset-triggered fruits_pipeline
run that commits the landed images. Nothing triggers the DAG through the API here.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest

from conftest import TEST_IMAGE_SIZE
from fruits.settings import DEFAULT_REGION
from fruits_dev import s3_server
from fruits_dev.airflow_stack import DAG_ID, AirflowStack, StackConfig, free_port
from fruits_dev.samples import generate_samples

pytestmark = pytest.mark.spark

BUCKET = "fruits"
SENSOR_TIMEOUT = 20  # a run whose images an earlier run took is skipped soon
RUN_TIMEOUT = 420


@pytest.fixture(scope="module")
def sqs_stack(tmp_path_factory):
    config = StackConfig(
        home=tmp_path_factory.mktemp("sqs-stack"),
        api_port=free_port(),
        s3_port=free_port(),
        bucket=BUCKET,
        samples=(),
        persist_s3=False,
        dag_refresh_seconds=10,
        trigger="sqs",
        env={
            "FRUITS_SQS_POLL_SECONDS": "2",  # SqsSensorTrigger's waiter_delay (default 60 s)
            "FRUITS_SENSOR_POKE_INTERVAL": "15",  # < 15 s in reschedule mode: apache/airflow#71172
            "FRUITS_SENSOR_TIMEOUT": str(SENSOR_TIMEOUT),
            "FRUITS_TASK_RETRIES": "0",
            "FRUITS_IMAGE_SIZE": str(TEST_IMAGE_SIZE),
            "FRUITS_SPARK_DRIVER_MEMORY": "2g",
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        },
    )
    with AirflowStack(config, echo=lambda message: print(f"[sqs-stack] {message}", flush=True)) as stack:
        yield stack


def watchers(stack: AirflowStack) -> list[str]:
    assets = stack.api.get("/api/v2/assets", params={"limit": 100})["assets"]
    return [w["name"] for a in assets if a["name"] == "fruits_landing" for w in a["watchers"]]


def runs(stack: AirflowStack) -> list[dict]:
    return stack.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"order_by": "run_after"})["dag_runs"]


def wait_for(what: str, check, timeout: float, stack: AirflowStack):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s; triggerer log:\n{stack.tail('triggerer')}"
        time.sleep(2)
    return found


def queued_messages(stack: AirflowStack) -> int:
    sqs = boto3.client(
        "sqs",
        endpoint_url=stack.endpoint,
        region_name=DEFAULT_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    return sum(
        int(v) for v in sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=names)["Attributes"].values()
    )


@pytest.fixture(scope="module")
def watched(sqs_stack) -> list[str]:
    """The watcher is registered once the dag-processor parses the DAG unpaused (the stack unpauses it)."""
    return wait_for("watcher on fruits_landing", lambda: watchers(sqs_stack), 180, sqs_stack)


@pytest.fixture(scope="module")
def event_run(sqs_stack, watched, tmp_path_factory):
    """Land images (nothing else), then wait for the run the events start, and for every run to end."""
    stack = sqs_stack
    assert runs(stack) == []
    samples = generate_samples(tmp_path_factory.mktemp("landed"), n_classes=2, per_class=2, seed=3)
    s3 = s3_server.client(stack.endpoint)
    landed = s3_server.upload_tree(s3, BUCKET, samples.root, "landing/")
    started = time.monotonic()
    [first, *_] = wait_for("asset-triggered run", lambda: runs(stack), 120, stack)
    state = stack.api.wait_run(DAG_ID, first["dag_run_id"], timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    # Messages received after the first run had planned queue one more run, which finds nothing.
    for run in runs(stack)[1:]:
        stack.api.wait_run(DAG_ID, run["dag_run_id"], timeout=SENSOR_TIMEOUT + 120)
    return first, state, landed, seconds


def test_the_dag_is_scheduled_on_the_watched_landing_asset(sqs_stack, watched):
    dag = sqs_stack.api.get(f"/api/v2/dags/{DAG_ID}")
    assert dag["is_paused"] is False and "asset" in dag["timetable_summary"].lower(), dag["timetable_summary"]
    assert sqs_stack.env["FRUITS_TRIGGER"] == "sqs" and sqs_stack.env["FRUITS_SQS_QUEUE_URL"] == sqs_stack.queue_url
    assert watched == ["fruits_landing_sqs"]
    assert runs(sqs_stack) == []  # setting the notification up started nothing (its s3:TestEvent was drained)


def test_landing_images_starts_a_run_through_the_triggerer_that_commits_them(sqs_stack, event_run):
    stack = sqs_stack
    run, state, landed, seconds = event_run
    tasks = stack.api.task_states(DAG_ID, run["dag_run_id"])
    assert state == "success" and set(tasks.values()) == {"success"}, (tasks, stack.tail("scheduler"))
    assert run["run_type"] == "asset_triggered", run
    print(f"upload to committed: {seconds:.0f}s")

    # The run's triggering events came from the watcher and carry the S3 messages of the landed keys.
    consumed = stack.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
    events = consumed["asset_events"]
    assert events and all(e["extra"]["from_trigger"] is True for e in events), events
    from fruits.events import landed_keys

    keys = [k for e in events for k in landed_keys(e["extra"])]
    assert keys and all(k.startswith("landing/") for k in keys), keys

    # Every landed image was committed once, across however many runs the events started. (moto's
    # state lives in the test process: earlier tests' stacks may have left batches in this bucket.)
    s3 = s3_server.client(stack.endpoint)
    ledger = json.loads(s3.get_object(Bucket=BUCKET, Key="state/ledger.json")["Body"].read())
    ours = {r["dag_run_id"] for r in runs(stack)}
    sources = []
    for batch in [b for b in ledger["batches"] if b["run_id"] in ours]:
        body = s3.get_object(Bucket=BUCKET, Key=f"batches/{batch['batch_id']}/manifest.jsonl")["Body"].read()
        sources += [json.loads(line)["source"] for line in body.decode().splitlines() if line]
    assert len(sources) == len(set(sources)) == landed, sources
    assert set(keys) <= {s.split(f"s3://{BUCKET}/", 1)[1] for s in sources}
    assert queued_messages(stack) == 0  # received and deleted by the trigger


def test_later_runs_only_follow_events_and_end_without_work(sqs_stack, event_run):
    """Runs queued by messages the first run's plan had already covered find nothing: skipped."""
    first = event_run[0]
    for run in runs(sqs_stack):
        assert run["run_type"] == "asset_triggered", run
        if run["dag_run_id"] != first["dag_run_id"]:
            tasks = sqs_stack.api.task_states(DAG_ID, run["dag_run_id"])
            assert run["state"] == "success" and set(tasks.values()) == {"skipped"}, tasks
