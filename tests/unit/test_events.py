"""Event-driven start (fruits.events): the queue URL check, the AWS documents (bucket notification,
queue policy, the Airflow role's SQS statements) and docs/events.md against them, the settings,
the DAG's schedule in both modes, and the trigger itself against moto's S3 -> SQS notifications.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import uuid

import boto3
import pytest

from conftest import DAGS, ROOT
from fruits import events, settings
from fruits_dev import runner, s3_server

AWS_URL = "https://sqs.eu-west-3.amazonaws.com/111122223333/fruits-landing"
ARN = "arn:aws:sqs:eu-west-3:111122223333:fruits-landing"
DOC = ROOT / "docs" / "events.md"


# ------------------------------------------------------------------------------ queue URLs


def test_an_aws_queue_url_gives_the_queue_arn():
    queue = events.parse_queue_url(AWS_URL)
    assert (queue.account_id, queue.name, queue.region) == ("111122223333", "fruits-landing", "eu-west-3")
    assert queue.arn == ARN
    china = events.parse_queue_url("https://sqs.cn-north-1.amazonaws.com.cn/111122223333/q")
    assert china.region == "cn-north-1"


def test_a_local_queue_url_has_no_region_unless_given():
    url = "http://127.0.0.1:9000/123456789012/fruits-landing"
    queue = events.parse_queue_url(url)
    assert queue.region is None and queue.url == url
    with pytest.raises(ValueError, match="region"):
        _ = queue.arn
    assert events.parse_queue_url(url, region="eu-west-3").arn == "arn:aws:sqs:eu-west-3:123456789012:fruits-landing"


@pytest.mark.parametrize(
    "url",
    [
        "fruits-landing",
        "sqs://eu-west-3/fruits",
        "https://sqs.eu-west-3.amazonaws.com/",
        "https://sqs.eu-west-3.amazonaws.com/fruits-landing",
        "https://sqs.eu-west-3.amazonaws.com/1234/fruits-landing",
        "https://sqs.eu-west-3.amazonaws.com/111122223333/a/b",
    ],
)
def test_what_is_not_a_queue_url_is_refused(url):
    with pytest.raises(ValueError, match="must be an SQS queue URL"):
        events.parse_queue_url(url)


def test_a_fifo_queue_is_refused_as_s3_cannot_notify_it():
    with pytest.raises(ValueError, match="standard queues"):
        events.parse_queue_url(AWS_URL + ".fifo")


# ------------------------------------------------------------------------------ the AWS documents


def test_the_bucket_notification_sends_objects_created_under_the_landing_prefix_to_the_queue():
    [config] = events.bucket_notification(queue_arn=ARN, landing_prefix="incoming/")["QueueConfigurations"]
    assert config["QueueArn"] == ARN and config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}}


def test_the_queue_policy_lets_only_s3_send_for_this_bucket_of_this_account():
    policy = events.queue_policy(queue_arn=ARN, bucket="fruit-bucket", bucket_account_id="111122223333")
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Allow" and statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == ARN
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": "arn:aws:s3:::fruit-bucket"},
        "StringEquals": {"aws:SourceAccount": "111122223333"},
    }


def test_the_airflow_role_may_only_receive_and_delete_on_that_queue():
    [statement] = events.airflow_role_statements(queue_arn=ARN)
    assert statement["Resource"] == ARN and statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
    ]
    assert "Condition" not in statement and all(a.startswith("sqs:") and "*" not in a for a in statement["Action"])


def doc_json(marker: str):
    match = re.search(rf"<!-- {marker} -->\s*```json\n(.*?)\n```", DOC.read_text(), re.S)
    assert match, f"no JSON block after <!-- {marker} --> in {DOC}"
    return json.loads(match.group(1))


def test_docs_show_the_documents_the_code_generates():
    generated = events.documents(bucket="YOUR_BUCKET", queue_url=AWS_URL)
    assert set(generated) == {"bucket-notification", "queue-policy", "airflow-role-statements"}
    for marker, document in generated.items():
        assert doc_json(marker) == document, marker


def test_docs_state_the_request_counts_the_code_computes():
    counts = events.monthly_start_requests(
        poke_interval=settings.Settings().sensor_poke_interval,
        sqs_poll_seconds=settings.Settings().sqs_poll_seconds,
        images=1_000_000,
    )
    assert counts == {
        "poll_sensor_tries": 43_200,
        "poll_list_requests": 43_200,
        "sqs_idle_receives": 32_400,
        "sqs_image_requests": 1_200_000,
    }
    cost = DOC.read_text().split("## Cost", 1)[1]
    for value in counts.values():
        assert f"{value:,}" in cost, value


def test_the_cli_prints_the_documents():
    out = subprocess.run(
        [sys.executable, "-m", "fruits.events", "--bucket", "YOUR_BUCKET", "--queue-url", AWS_URL],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert json.loads(out.stdout) == events.documents(bucket="YOUR_BUCKET", queue_url=AWS_URL)


# ------------------------------------------------------------------------------ settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("FRUITS_TRIGGER", "FRUITS_SQS_QUEUE_URL", "FRUITS_SQS_POLL_SECONDS", "FRUITS_SCHEDULE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_polling_is_the_default(clean_env):
    loaded = settings.Settings()
    assert loaded.trigger == "poll" and loaded.sqs_queue_url is None and loaded.sqs_poll_seconds == 60


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FRUITS_TRIGGER": "s3"}, "FRUITS_TRIGGER must be one of"),
        ({"FRUITS_TRIGGER": "sqs"}, "needs FRUITS_SQS_QUEUE_URL"),
        ({"FRUITS_TRIGGER": "sqs", "FRUITS_SQS_QUEUE_URL": "fruits-landing"}, "must be an SQS queue URL"),
        ({"FRUITS_TRIGGER": "sqs", "FRUITS_SQS_QUEUE_URL": AWS_URL + ".fifo"}, "standard queues"),
        ({"FRUITS_TRIGGER": "sqs", "FRUITS_SQS_QUEUE_URL": AWS_URL, "FRUITS_SQS_POLL_SECONDS": "0"}, "at least 1"),
        ({"FRUITS_TRIGGER": "sqs", "FRUITS_SQS_QUEUE_URL": AWS_URL, "FRUITS_SQS_POLL_SECONDS": "soon"}, "integer"),
    ],
)
def test_bad_trigger_settings_are_refused_with_a_clear_message(clean_env, env, message):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        settings.Settings()


def test_sqs_settings_are_read(clean_env):
    clean_env.setenv("FRUITS_TRIGGER", "SQS")
    clean_env.setenv("FRUITS_SQS_QUEUE_URL", AWS_URL)
    clean_env.setenv("FRUITS_SQS_POLL_SECONDS", "5")
    loaded = settings.Settings()
    assert (loaded.trigger, loaded.sqs_queue_url, loaded.sqs_poll_seconds) == ("sqs", AWS_URL, 5)


# ------------------------------------------------------------------------------ the DAG's schedule


def load_pipeline(monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["fruits_pipeline"]


def test_polling_schedules_on_fruits_schedule(clean_env):
    dag = load_pipeline(clean_env, FRUITS_COMPUTE="local", FRUITS_SCHEDULE="@daily")
    assert type(dag.timetable).__name__ == "CronTriggerTimetable" and dag.timetable.expression == "0 0 * * *"
    assert not dag.timetable.asset_condition
    assert dag.task_dict["wait_for_new_images"].mode == "reschedule"


@pytest.mark.parametrize("compute", ["local", "emr"])
def test_sqs_schedules_on_the_landing_asset_watched_in_the_triggerer(clean_env, compute):
    dag = load_pipeline(
        clean_env,
        FRUITS_COMPUTE=compute,
        FRUITS_TRIGGER="sqs",
        FRUITS_SQS_QUEUE_URL=AWS_URL,
        FRUITS_SQS_POLL_SECONDS="7",
    )
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    [asset] = dag.timetable.asset_condition.objects
    assert asset.name == "fruits_landing"
    [watcher] = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "airflow.providers.amazon.aws.triggers.sqs.SqsSensorTrigger"
    assert kwargs["sqs_queue"] == AWS_URL and kwargs["region_name"] == "eu-west-3"
    assert kwargs["waiter_delay"] == 7 and kwargs["wait_time_seconds"] == 20 and kwargs["max_messages"] == 10
    assert kwargs["delete_message_on_reception"] is True and kwargs["aws_conn_id"] == "aws_default"
    # The sensor stays: on an event run it finds the images at its first poke.
    assert "wait_for_new_images" in dag.task_dict and dag.max_active_runs == 1


def test_the_sqs_dag_serializes_its_watcher_for_the_scheduler(clean_env):
    from airflow.serialization.serialized_objects import DagSerialization

    dag = load_pipeline(clean_env, FRUITS_TRIGGER="sqs", FRUITS_SQS_QUEUE_URL=AWS_URL)
    text = json.dumps(DagSerialization.to_dict(dag))
    assert "fruits_landing_sqs" in text and "SqsSensorTrigger" in text and AWS_URL in text


def test_the_sqs_dag_file_parses_fast_and_without_the_network():
    code = f"""
import json, socket, sys, time, importlib.util
import airflow.sdk
def refuse(*args, **kwargs):
    raise AssertionError("network access at parse time")
socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("fruits_pipeline", {str(DAGS / "fruits_pipeline.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
schedule = type(module.pipeline_dag.timetable).__name__
print(json.dumps({{"seconds": time.perf_counter() - started, "schedule": schedule}}))
"""
    env = {**os.environ, "FRUITS_TRIGGER": "sqs", "FRUITS_SQS_QUEUE_URL": AWS_URL}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["seconds"] < 2.0 and result["schedule"] == "AssetTriggeredTimetable", result


# ------------------------------------------------------------------------------ against moto


class RecordingServer:
    """moto's server app behind a WSGI layer that records the SQS actions (X-Amz-Target) it serves."""

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self.actions: list[str] = []
        self.app = DomainDispatcherApplication(create_backend_app)
        self.server = make_server("127.0.0.1", 0, self, threaded=True, request_handler=MotoRequestHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("AmazonSQS."):
            self.actions.append("sqs:" + target.split(".", 1)[1])
        return self.app(environ, start_response)

    def stop(self):
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def moto_queue(monkeypatch):
    """A recording moto server, a bucket and a queue of their own (moto's state is per process)."""
    server = RecordingServer()
    s3 = s3_server.client(server.endpoint)
    bucket = f"fruits-{uuid.uuid4().hex[:12]}"
    s3_server.ensure_bucket(s3, bucket)
    sqs = boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name="eu-west-3",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = sqs.create_queue(QueueName=f"{bucket}-landing")["QueueUrl"]
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", runner.aws_connection(server.endpoint))
    yield server, s3, sqs, bucket, url
    server.stop()


def queued(sqs, url) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    return sum(int(v) for v in attributes["Attributes"].values())


def test_configure_sets_policy_and_notification_keeps_others_and_drains_the_test_event(moto_queue):
    server, s3, sqs, bucket, url = moto_queue
    other = sqs.create_queue(QueueName=f"{bucket}-other")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"Id": "someone-else", "QueueArn": other_arn, "Events": ["s3:ObjectRemoved:*"]}]
        },
    )
    for _ in range(2):  # idempotent: a second run replaces its own entry
        events.configure(s3, sqs, bucket=bucket, queue_url=url, landing_prefix="landing/")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert policy == events.queue_policy(queue_arn=arn, bucket=bucket, bucket_account_id=arn.split(":")[4])
    configs = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert sorted(c["Id"] for c in configs) == ["fruits-landing-to-sqs", "someone-else"]
    assert queued(sqs, url) == 0  # S3's s3:TestEvent messages were received and deleted

    s3.put_object(Bucket=bucket, Key="batches/b1/images/000001.jpg", Body=b"not news")
    s3.put_object(Bucket=bucket, Key="landing/Apple Red/img 1.jpg", Body=b"news")
    [message] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert events.landed_keys({"payload": {"message_batch": [message]}}) == ["landing/Apple Red/img 1.jpg"]


def test_the_watcher_trigger_receives_the_landing_events_and_deletes_them(moto_queue, clean_env):
    server, s3, sqs, bucket, url = moto_queue
    events.configure(s3, sqs, bucket=bucket, queue_url=url, landing_prefix="landing/")
    keys = [f"landing/Banana/{i}.jpg" for i in range(3)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"jpeg")
    clean_env.setenv("FRUITS_TRIGGER", "sqs")
    clean_env.setenv("FRUITS_SQS_QUEUE_URL", url)
    clean_env.setenv("FRUITS_SQS_POLL_SECONDS", "1")
    trigger = events.landing_trigger(settings.Settings())
    mark = len(server.actions)

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=60))
    made = {action.replace("DeleteMessageBatch", "DeleteMessage") for action in server.actions[mark:]}
    assert event.payload["status"] == "success"
    assert sorted(events.landed_keys({"from_trigger": True, "payload": event.payload})) == keys
    assert queued(sqs, url) == 0  # deleted on reception
    # Every call the triggerer made is allowed by the statements the Airflow role gets.
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    [statement] = events.airflow_role_statements(queue_arn=arn)
    assert made and made <= set(statement["Action"]), made


# ------------------------------------------------------------------------------ the dev stack


def test_the_dev_stack_takes_its_trigger_from_the_environment(monkeypatch):
    from fruits_dev.airflow_stack import StackConfig

    monkeypatch.delenv("FRUITS_TRIGGER", raising=False)
    assert StackConfig.from_environment().trigger == "poll"
    monkeypatch.setenv("FRUITS_TRIGGER", " SQS ")
    assert StackConfig.from_environment().trigger == "sqs"


@pytest.mark.parametrize(
    "trigger, endpoint, message",
    [
        ("kafka", None, "FRUITS_TRIGGER must be poll or sqs"),
        ("sqs", "http://127.0.0.1:9000", "MinIO cannot publish S3 events to SQS"),
    ],
)
def test_the_dev_stack_refuses_an_sqs_start_it_cannot_serve(tmp_path, trigger, endpoint, message):
    from fruits_dev.airflow_stack import AirflowStack, StackConfig, StackError

    stack = AirflowStack(StackConfig(home=tmp_path, trigger=trigger, s3_endpoint=endpoint))
    with pytest.raises(StackError, match=message):
        stack._start_events()
    assert stack.queue_url is None
