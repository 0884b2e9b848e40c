"""EmrStepSensorWithLogs: a failed step's exception starts with the job's own error line.

EMR is a stub (DescribeStep / DescribeCluster answers), the logs are gzip objects on moto's S3."""

from __future__ import annotations

import gzip
import logging
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from fruits.backends.emr.sensors import EmrStepSensorWithLogs
from fruits.core import report
from fruits.storage import Bucket

CLUSTER, STEP = "j-2AXXXXXXGAPLF", "s-1EXAMPLE"
APP = "application_1765000000000_0001"
STEP_STDERR = f"emr-logs/{CLUSTER}/steps/{STEP}/stderr.gz"
DRIVER_STDERR = f"emr-logs/{CLUSTER}/containers/{APP}/container_1765000000000_0001_01_000001/stderr.gz"
JOB_ERROR = "featurize: error: cannot read weights file s3://fruits-unit/models/w.h5 (NoSuchKey)"
DRIVER_LOG = (
    "".join(f"25/12/06 10:01:{i:02d} INFO BlockManager: line {i}\n" for i in range(50))
    + f"{JOB_ERROR}\n25/12/06 10:02:00 ERROR ApplicationMaster: User application exited with status 2\n"
)
# What the trigger sends when the step ends FAILED (AwsBaseWaiterTrigger._event_from_exception).
FAILED_EVENT = {
    "status": "error",
    "message": f"Error while waiting for step {STEP} to complete: FAILED",
    "job_flow_id": None,
}


class FakeEmr:
    """The EMR client calls the sensor makes, answered from a step state and a LogUri."""

    def __init__(
        self,
        state: str = "FAILED",
        log_uri: str | None = "s3n://fruits-unit/emr-logs/",
        failure_details: dict | None = None,
    ):
        self.state, self.log_uri, self.failure_details = state, log_uri, failure_details or {}
        self.calls: list[str] = []

    def describe_step(self, ClusterId, StepId):  # noqa: N803 - boto3's names
        self.calls.append("DescribeStep")
        assert (ClusterId, StepId) == (CLUSTER, STEP)
        return {
            "Step": {
                "Id": STEP,
                "Name": "featurize",
                "Status": {"State": self.state, "FailureDetails": self.failure_details},
            },
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    def describe_cluster(self, ClusterId):  # noqa: N803
        self.calls.append("DescribeCluster")
        return {"Cluster": {"Id": ClusterId, **({"LogUri": self.log_uri} if self.log_uri else {})}}


def sensor_with(emr: FakeEmr, **kwargs) -> EmrStepSensorWithLogs:
    sensor = EmrStepSensorWithLogs(
        task_id="wait_featurize",
        job_flow_id=CLUSTER,
        step_id=STEP,
        deferrable=True,
        poke_interval=1,
        max_attempts=3,
        aws_conn_id=None,
        region_name="eu-west-3",
        logs_conn_id=None,
        log_wait_seconds=0,
        log_poll_seconds=0.01,
        do_xcom_push=False,
        **kwargs,
    )
    sensor.hook = SimpleNamespace(conn=emr, conn_region_name="eu-west-3", conn_partition="aws")
    return sensor


def put_gz(bucket: Bucket, key: str, text: str) -> None:
    bucket.write_bytes(key, gzip.compress(text.encode()))


@pytest.fixture
def failed_step_logs(bucket: Bucket) -> Bucket:
    put_gz(bucket, STEP_STDERR, f"25/12/06 10:02:00 INFO Client: Application report for {APP} (state: FAILED)\n")
    put_gz(bucket, DRIVER_STDERR, DRIVER_LOG)
    return bucket


def test_a_failed_step_after_deferral_raises_the_jobs_error_line_first(failed_step_logs, caplog):
    emr = FakeEmr()
    with caplog.at_level(logging.INFO), pytest.raises(AirflowFailException) as failure:
        sensor_with(emr).execute_complete(context={}, event=FAILED_EVENT)
    lines = str(failure.value).splitlines()
    assert lines[0] == JOB_ERROR
    assert lines[1] == f"EMR step {STEP} (featurize) is FAILED on cluster {CLUSTER}"
    assert f"driver log: s3://fruits-unit/{DRIVER_STDERR}" in lines
    assert f"spark-submit log: s3://fruits-unit/{STEP_STDERR}" in lines
    # The task log has the driver's last lines and where they come from.
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert "INFO BlockManager: line 49" in errors and "User application exited with status 2" in errors
    assert "INFO BlockManager: line 5\n" not in errors  # the tail, not the whole log
    assert f"s3://fruits-unit/{DRIVER_STDERR}" in errors
    # What the failed run's report keeps (dags/fruits_pipeline.py: str(context["exception"])).
    failed = report.build_failed(
        run_id="r",
        failed_task="emr.wait_featurize",
        error=str(failure.value),
        reason="task failed",
        committed_batch=None,
    )
    assert failed["error"] == JOB_ERROR


def test_a_step_failed_at_the_first_poke_is_explained_too(failed_step_logs, caplog):
    emr = FakeEmr(failure_details={"Reason": "Unknown Error."})
    with caplog.at_level(logging.INFO), pytest.raises(AirflowFailException) as failure:
        sensor_with(emr).poke(context={})
    lines = str(failure.value).splitlines()
    assert lines[0] == JOB_ERROR and "EMR: Reason Unknown Error." in lines
    assert "User application exited with status 2" in caplog.text


def test_success_is_the_providers(bucket: Bucket):
    emr = FakeEmr(state="COMPLETED")
    sensor = sensor_with(emr)
    assert sensor.execute_complete(context={}, event={"status": "success", "job_flow_id": None}) is None
    assert emr.calls == []  # nothing described, nothing read
    assert sensor.poke(context={}) is True
    assert "DescribeStep" in emr.calls and not bucket.list_keys("")


def test_a_trigger_that_gave_up_on_a_running_step_keeps_the_providers_error(bucket: Bucket):
    event = {"status": "error", "message": "Waiter error: max attempts reached", "job_flow_id": None}
    with pytest.raises(AirflowException) as failure:
        sensor_with(FakeEmr(state="RUNNING")).execute_complete(context={}, event=event)
    assert type(failure.value) is AirflowException
    assert str(failure.value).startswith("Error while running job:") and "max attempts" in str(failure.value)


def test_logs_not_there_within_the_wait_say_where_they_will_be(bucket: Bucket):
    with pytest.raises(AirflowFailException) as failure:
        sensor_with(FakeEmr()).execute_complete(context={}, event=FAILED_EVENT)
    first, *rest = str(failure.value).splitlines()
    assert first.startswith("Error while running job:")  # the provider's message: no error line to show
    assert any(f"they will be under s3://fruits-unit/emr-logs/{CLUSTER}/steps/{STEP}/" in line for line in rest)


def test_logs_that_cannot_be_read_fall_back_to_the_providers_message(bucket: Bucket, caplog):
    emr = FakeEmr(log_uri="s3://no-such-bucket-for-logs/emr-logs/")  # reading fails: NoSuchBucket
    with pytest.raises(AirflowFailException) as failure:
        sensor_with(emr).poke(context={})
    lines = str(failure.value).splitlines()
    assert lines[0] == "EMR job failed: None"
    assert lines[1] == f"EMR step {STEP} (featurize) is FAILED on cluster {CLUSTER}"
    assert lines[2].startswith("logs not read (") and "NoSuchBucket" in lines[2]
    assert lines[2].endswith(
        f"they are under s3://no-such-bucket-for-logs/emr-logs/{CLUSTER}/steps/{STEP}/ "
        f"(spark-submit) and s3://no-such-bucket-for-logs/emr-logs/{CLUSTER}/containers/ "
        "(driver)"
    )


def test_a_cluster_without_log_uri_says_so(bucket: Bucket):
    with pytest.raises(AirflowFailException) as failure:
        sensor_with(FakeEmr(log_uri=None)).execute_complete(context={}, event=FAILED_EVENT)
    assert f"cluster {CLUSTER} has no LogUri: its logs are not in S3" in str(failure.value).splitlines()
