"""step_logs: why a failed EMR step failed, from gzip logs laid out as EMR writes them (moto S3)."""

from __future__ import annotations

import gzip
import time

import pytest

from fruits.backends.emr import step_logs
from fruits.storage import Bucket

LOG_URI = "s3://fruits-unit/emr-logs/"
CLUSTER, STEP = "j-2AXXXXXXGAPLF", "s-1EXAMPLE"
APP = "application_1765000000000_0001"
STEP_STDERR = f"emr-logs/{CLUSTER}/steps/{STEP}/stderr.gz"
DRIVER_STDERR = f"emr-logs/{CLUSTER}/containers/{APP}/container_1765000000000_0001_01_000001/stderr.gz"
DRIVER_STDOUT = DRIVER_STDERR.replace("stderr.gz", "stdout.gz")

CLIENT_LOG = f"""\
25/12/06 10:00:00 INFO Client: Submitting application {APP} to ResourceManager
25/12/06 10:00:01 INFO YarnClientImpl: Submitted application {APP}
25/12/06 10:02:00 INFO Client: Application report for {APP} (state: FAILED)
25/12/06 10:02:00 INFO Client:
\t client token: N/A
\t diagnostics: User application exited with status 2
Exception in thread "main" org.apache.spark.SparkException: Application {APP} finished with failed status
\tat org.apache.spark.deploy.yarn.Client.run(Client.scala:1340)
"""
SPARK_NOISE = "".join(f"25/12/06 10:01:{i:02d} INFO BlockManager: line {i}\n" for i in range(60))
JOB_ERROR_LOG = (
    SPARK_NOISE + "2025-12-06 10:01:59,000 featurize INFO reading the manifest\n"
    "featurize: error: cannot read weights file s3://fruits-unit/models/w.h5 (NoSuchKey)\n"
    "25/12/06 10:02:00 ERROR ApplicationMaster: User application exited with status 2\n"
)
TRACEBACK_LOG = (
    SPARK_NOISE
    + """\
Traceback (most recent call last):
  File "/mnt/yarn/usercache/hadoop/appcache/featurize.py", line 412, in <module>
    main()
  File "/mnt/yarn/usercache/hadoop/appcache/featurize.py", line 98, in read_manifest
    raise FileNotFoundError(path)
FileNotFoundError: s3://fruits-unit/batches/b1/manifest.json
25/12/06 10:02:00 ERROR ApplicationMaster: User application exited with status 1
"""
)


def put_gz(bucket: Bucket, key: str, text: str) -> None:
    bucket.write_bytes(key, gzip.compress(text.encode()))


def find(bucket: Bucket, **kwargs) -> step_logs.StepLogs:
    return step_logs.find_step_logs(
        bucket, LOG_URI, CLUSTER, STEP, **{"wait_seconds": 0, "poll_seconds": 0.01, **kwargs}
    )


# ----------------------------------------------------------------------------- pure functions


def test_the_application_comes_from_the_client_log_and_names_the_driver_container():
    assert step_logs.application_id(CLIENT_LOG) == APP
    assert step_logs.application_id("Error: Cannot load main class from JAR") is None
    assert step_logs.driver_log_key("emr-logs/", CLUSTER, APP, CLIENT_LOG) == DRIVER_STDERR
    assert step_logs.driver_log_key("emr-logs/", CLUSTER, APP, CLIENT_LOG, "stdout") == DRIVER_STDOUT
    retried = CLIENT_LOG + "AM Container for appattempt_1765000000000_0001_000002 exited with exitCode: 1\n"
    assert step_logs.driver_container_id(APP, retried) == "container_1765000000000_0001_02_000001"


def test_the_log_uri_may_be_s3n_and_its_prefix_always_ends_with_a_slash():
    assert step_logs.parse_log_uri("s3n://fruits/emr-logs/") == ("fruits", "emr-logs/")
    assert step_logs.parse_log_uri("s3://fruits/emr-logs") == ("fruits", "emr-logs/")
    assert step_logs.parse_log_uri("s3://fruits/") == ("fruits", "")
    assert step_logs.log_locations("s3n://fruits/logs/", "j-1", "s-1") == (
        "s3://fruits/logs/j-1/steps/s-1/",
        "s3://fruits/logs/j-1/containers/",
    )
    with pytest.raises(ValueError):
        step_logs.parse_log_uri("hdfs:///logs/")


def test_the_jobs_error_line_comes_before_any_traceback():
    text = TRACEBACK_LOG + "25/12/06 10:02:01 ERROR featurize: error: --image-size must be positive\n"
    assert (
        step_logs.error_line(JOB_ERROR_LOG)
        == "featurize: error: cannot read weights file s3://fruits-unit/models/w.h5 (NoSuchKey)"
    )
    assert step_logs.error_line(text) == "featurize: error: --image-size must be positive"  # prefix removed
    usage = "usage: pca.py [-h] --features FEATURES\npca.py: error: the following arguments are required: --k\n"
    assert step_logs.error_line(usage) == "pca.py: error: the following arguments are required: --k"


def test_otherwise_the_last_line_of_the_last_python_traceback():
    assert step_logs.error_line(TRACEBACK_LOG) == "FileNotFoundError: s3://fruits-unit/batches/b1/manifest.json"
    chained = (
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nKeyError: 'x'\n\n"
        "During handling of the above exception, another exception occurred:\n\n" + TRACEBACK_LOG
    )
    assert step_logs.error_line(chained).startswith("FileNotFoundError: ")
    analysis = (
        'Traceback (most recent call last):\n  File "pca.py", line 7, in <module>\n'
        "    df = spark.read.parquet(path)\n         ^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: "
        "s3://fruits-unit/features/batch=b1.\n"
    )
    assert step_logs.error_line(analysis) == (
        "pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: "
        "s3://fruits-unit/features/batch=b1."
    )
    py4j = (
        'Traceback (most recent call last):\n  File "pca.py", line 7, in <module>\n'
        "py4j.protocol.Py4JJavaError: An error occurred while calling o71.parquet.\n"
        ": java.nio.file.AccessDeniedException: s3://fruits-unit/pca/run=r/: 403 Forbidden\n"
        "\tat org.apache.hadoop.fs.s3a.S3AUtils.translateException(S3AUtils.java:255)\n"
    )
    assert step_logs.error_line(py4j) == (  # the Java exception, on the next line, kept on the same line
        "py4j.protocol.Py4JJavaError: An error occurred while calling o71.parquet: "
        "java.nio.file.AccessDeniedException: s3://fruits-unit/pca/run=r/: 403 Forbidden"
    )


def test_no_error_line_without_a_job_error_or_a_python_traceback():
    assert step_logs.error_line(CLIENT_LOG) is None  # a Java exception is not the job's own error
    assert step_logs.error_line("") is None


def test_tail_keeps_the_last_lines():
    text = "".join(f"line {i}\n" for i in range(100)) + "\n\n"
    assert step_logs.tail(text, 3) == "line 97\nline 98\nline 99"
    assert step_logs.tail(text).splitlines() == [f"line {i}" for i in range(60, 100)]


def test_a_truncated_gzip_log_gives_what_it_holds():
    whole = gzip.compress(("x" * 2000 + "\nfeaturize: error: boom\n").encode())
    assert step_logs.decompress(whole).endswith("featurize: error: boom\n")
    assert step_logs.decompress(whole[:-10]).startswith("x" * 100)
    assert step_logs.decompress(b"plain text\n") == "plain text\n"


# ----------------------------------------------------------------------------- reading them from S3


def test_a_job_error_is_read_from_the_drivers_stderr(bucket: Bucket):
    put_gz(bucket, STEP_STDERR, CLIENT_LOG)
    put_gz(bucket, DRIVER_STDERR, JOB_ERROR_LOG)
    logs = find(bucket, wait_seconds=30)
    assert logs.error_line == "featurize: error: cannot read weights file s3://fruits-unit/models/w.h5 (NoSuchKey)"
    assert logs.tail == step_logs.tail(JOB_ERROR_LOG) and "exited with status 2" in logs.tail.splitlines()[-1]
    assert logs.tail_uri == logs.driver_log_uri == f"s3://fruits-unit/{DRIVER_STDERR}"
    assert logs.where() == [
        f"driver log: s3://fruits-unit/{DRIVER_STDERR}",
        f"spark-submit log: s3://fruits-unit/{STEP_STDERR}",
    ]
    assert logs.waited_seconds < 30  # found: no waiting for the bound


def test_a_pyspark_drivers_error_is_read_from_its_stdout_where_pythonrunner_puts_it(bucket: Bucket):
    """spark-submit's PythonRunner merges the Python process's stderr into the container's stdout;
    the container's stderr holds the JVM's log, which says nothing of the job's reason."""
    put_gz(bucket, STEP_STDERR, CLIENT_LOG)
    put_gz(bucket, DRIVER_STDERR, SPARK_NOISE + "25/12/06 10:02:00 ERROR Inbox: Ignoring error\n")
    put_gz(
        bucket,
        DRIVER_STDOUT,
        "2025-12-06 10:01:59,000 featurize INFO model cache miss\n"
        "featurize: error: cannot load the weights file s3://fruits-unit/w.h5: bad\n",
    )
    logs = find(bucket)
    assert logs.error_line == "featurize: error: cannot load the weights file s3://fruits-unit/w.h5: bad"
    assert logs.tail_uri == logs.driver_log_uri == f"s3://fruits-unit/{DRIVER_STDOUT}"
    assert "model cache miss" in logs.tail


def test_a_plain_python_traceback_is_read_from_the_drivers_stderr(bucket: Bucket):
    put_gz(bucket, STEP_STDERR, CLIENT_LOG)
    put_gz(bucket, DRIVER_STDERR, TRACEBACK_LOG)
    logs = find(bucket)
    assert logs.error_line == "FileNotFoundError: s3://fruits-unit/batches/b1/manifest.json"
    assert logs.tail_uri == f"s3://fruits-unit/{DRIVER_STDERR}"


def test_logs_that_appear_after_a_few_polls_are_found(bucket: Bucket):
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) == 2:
            put_gz(bucket, STEP_STDERR, CLIENT_LOG)  # the step's log first ...
        if len(polls) == 4:
            put_gz(bucket, DRIVER_STDERR, JOB_ERROR_LOG)  # ... the driver's a few minutes later
        time.sleep(seconds)

    logs = find(bucket, wait_seconds=30, poll_seconds=0.01, sleep=sleep)
    assert len(polls) == 4 and all(p <= 0.01 for p in polls)
    assert logs.found and logs.error_line.startswith("featurize: error: cannot read weights file")
    assert logs.tail_uri == f"s3://fruits-unit/{DRIVER_STDERR}"


class FakeTime:
    """sleep() and clock() of a wait that takes no real time."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_logs_that_never_appear_say_where_they_will_be(bucket: Bucket):
    fake = FakeTime()
    logs = find(bucket, wait_seconds=300, poll_seconds=60, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [60] * 5 and logs.waited_seconds == 300  # the bound, then one last look
    assert not logs.found and logs.error_line is None and logs.tail == ""
    [where] = logs.where()
    assert "no logs in S3 after" in where
    assert f"they will be under s3://fruits-unit/emr-logs/{CLUSTER}/steps/{STEP}/ (spark-submit)" in where
    assert f"s3://fruits-unit/emr-logs/{CLUSTER}/containers/ (driver)" in where


def test_without_a_container_log_the_steps_stderr_is_shown(bucket: Bucket):
    put_gz(bucket, STEP_STDERR, CLIENT_LOG)
    fake = FakeTime()
    logs = find(bucket, wait_seconds=100, poll_seconds=40, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [40, 40, 20]  # waited for the driver's log, up to the bound
    assert logs.tail == step_logs.tail(CLIENT_LOG) and logs.tail_uri == f"s3://fruits-unit/{STEP_STDERR}"
    assert logs.error_line is None
    assert logs.where() == [
        f"spark-submit log: s3://fruits-unit/{STEP_STDERR}",
        f"no driver log after 100s; it will be at s3://fruits-unit/{DRIVER_STDERR}",
    ]


def test_a_spark_submit_that_started_no_application_is_read_at_once(bucket: Bucket):
    put_gz(
        bucket,
        STEP_STDERR,
        'Traceback (most recent call last):\n  File "x", line 1\nValueError: --master must be yarn\n',
    )
    logs = find(bucket, wait_seconds=30, sleep=lambda s: pytest.fail("no driver to wait for"))
    assert logs.error_line == "ValueError: --master must be yarn" and logs.driver_log_uri is None
    assert logs.where() == [
        f"spark-submit log: s3://fruits-unit/{STEP_STDERR} (it names no YARN application: no driver log)"
    ]


def test_a_log_uri_in_another_bucket_is_refused(bucket: Bucket):
    with pytest.raises(ValueError, match="not in bucket fruits-unit"):
        step_logs.find_step_logs(bucket, "s3://other/emr-logs/", CLUSTER, STEP, wait_seconds=0, poll_seconds=1)


def test_read_bytes_if_exists_is_none_for_a_missing_key(bucket: Bucket):
    bucket.write_bytes("a/x.gz", b"\x1f\x8b")
    assert bucket.read_bytes_if_exists("a/x.gz") == b"\x1f\x8b"
    assert bucket.read_bytes_if_exists("a/missing.gz") is None
