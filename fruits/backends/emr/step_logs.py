"""Why an EMR step failed, read from the logs EMR copies to the cluster's LogUri.

EMR's DescribeStep rarely says why a Spark step failed (its FailureDetails is often empty): the
reason is in the logs. The layout relied on (every file gzip):

    <LogUri><cluster-id>/steps/<step-id>/stderr.gz
        spark-submit's YARN client log (cluster deploy mode): it names the YARN application
        ("Application report for application_1765000000000_0001 (state: FAILED)");
    <LogUri><cluster-id>/containers/<application-id>/<container-id>/{stdout,stderr}.gz
        the containers' output; the driver runs in the application master's container, the
        first of its attempt: container_1765000000000_0001_01_000001. A PySpark driver's own
        output, stderr included (PythonRunner merges the Python process's stderr into its
        stdout), is in stdout.gz: the job's error line and traceback; the JVM's log is stderr.gz.

EMR uploads these every few minutes, so right after a failure they are often not there yet:
`find_step_logs` waits for them, up to a bound. All but it and `read_gz` are pure functions.
"""

from __future__ import annotations

import gzip
import re
import time
import zlib
from dataclasses import dataclass

from fruits.job_output import error_line

TAIL_LINES = 40
_APPLICATION = re.compile(r"\bapplication_(\d+_\d+)\b")
# YARN names the AM's attempt in the client's diagnostics ("appattempt_..._000002"): a retried
# driver's output is in that attempt's container, not the first one's.
_ATTEMPT = re.compile(r"\bappattempt_(\d+_\d+)_(\d+)\b")

# ----------------------------------------------------------------------------- where the logs are


def parse_log_uri(log_uri: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of a LogUri; DescribeCluster may answer s3n://."""
    match = re.fullmatch(r"s3[an]?://([^/]+)/?(.*)", log_uri.strip())
    if not match:
        raise ValueError(f"LogUri {log_uri!r} is not an s3:// URI")
    bucket, prefix = match.groups()
    return bucket, (prefix if not prefix or prefix.endswith("/") else prefix + "/")


def step_logs_prefix(log_prefix: str, cluster_id: str, step_id: str) -> str:
    return f"{log_prefix}{cluster_id}/steps/{step_id}/"


def containers_prefix(log_prefix: str, cluster_id: str) -> str:
    return f"{log_prefix}{cluster_id}/containers/"


def log_locations(log_uri: str, cluster_id: str, step_id: str) -> tuple[str, str]:
    """(spark-submit's logs, the containers' logs) of a step, as s3:// URIs: where to look."""
    bucket, prefix = parse_log_uri(log_uri)
    return (
        f"s3://{bucket}/{step_logs_prefix(prefix, cluster_id, step_id)}",
        f"s3://{bucket}/{containers_prefix(prefix, cluster_id)}",
    )


def application_id(text: str) -> str | None:
    """The YARN application spark-submit started, from the step's client log (the last named)."""
    found = _APPLICATION.findall(text)
    return f"application_{found[-1]}" if found else None


def driver_container_id(application: str, client_log: str = "") -> str:
    """The driver's container: the AM's first container, of the last attempt the client log names."""
    suffix = application.removeprefix("application_")
    attempts = [int(n) for app, n in _ATTEMPT.findall(client_log) if app == suffix]
    return f"container_{suffix}_{max(attempts, default=1):02d}_000001"


def driver_log_key(
    log_prefix: str, cluster_id: str, application: str, client_log: str = "", stream: str = "stderr"
) -> str:
    """The driver container's `stream` log: stdout holds a PySpark job's own messages, stderr the JVM's."""
    return (
        f"{containers_prefix(log_prefix, cluster_id)}{application}/"
        f"{driver_container_id(application, client_log)}/{stream}.gz"
    )


# ----------------------------------------------------------------------------- what they say


def decompress(data: bytes) -> str:
    """The text of a gzip log; of a truncated one, what can be read (better than nothing)."""
    if not data.startswith(b"\x1f\x8b"):  # not gzip after all: plain text
        return data.decode("utf-8", errors="replace")
    try:
        raw = gzip.decompress(data)
    except (EOFError, OSError, zlib.error):
        raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    return raw.decode("utf-8", errors="replace")


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines (trailing blank lines left out): where a failure shows."""
    return "\n".join(text.rstrip().splitlines()[-lines:]) if lines > 0 else ""


# ----------------------------------------------------------------------------- reading them


@dataclass(frozen=True)
class StepLogs:
    """What the logs of a failed step say, and where they are (or will be)."""

    error_line: str | None
    tail: str  # the driver's stderr, or spark-submit's when there is no driver log
    tail_uri: str | None  # the log `tail` comes from; None when no log was found
    step_logs_uri: str
    driver_log_uri: str | None  # None until the application is known
    containers_uri: str
    waited_seconds: float

    @property
    def found(self) -> bool:
        return self.tail_uri is not None

    def where(self) -> list[str]:
        """Lines saying where the logs are, or where they will be once EMR has uploaded them."""
        if not self.found:
            return [
                f"no logs in S3 after {self.waited_seconds:.0f}s (EMR uploads them every few minutes); "
                f"they will be under {self.step_logs_uri} (spark-submit) and {self.containers_uri} (driver)"
            ]
        if self.tail_uri == self.driver_log_uri:
            return [f"driver log: {self.driver_log_uri}", f"spark-submit log: {self.step_logs_uri}stderr.gz"]
        if self.driver_log_uri is None:
            return [f"spark-submit log: {self.tail_uri} (it names no YARN application: no driver log)"]
        return [
            f"spark-submit log: {self.tail_uri}",
            f"no driver log after {self.waited_seconds:.0f}s; it will be at {self.driver_log_uri}",
        ]


def read_gz(bucket, key: str) -> str | None:
    """A gzip log's text through a fruits.storage.Bucket; None when it is not there (yet)."""
    data = bucket.read_bytes_if_exists(key)
    return None if data is None else decompress(data)


def find_step_logs(
    bucket,
    log_uri: str,
    cluster_id: str,
    step_id: str,
    *,
    wait_seconds: float,
    poll_seconds: float,
    sleep=time.sleep,
    clock=time.monotonic,
) -> StepLogs:
    """The failed step's logs from `bucket` (the LogUri's, a fruits.storage.Bucket), read every
    `poll_seconds` until the driver's logs are there, or spark-submit's when it never started a
    YARN application, or `wait_seconds` have passed: EMR uploads logs every few minutes.

    Errors other than a missing object (access denied ...) are raised: the caller decides."""
    log_bucket, prefix = parse_log_uri(log_uri)
    if log_bucket != bucket.name:
        raise ValueError(f"LogUri {log_uri} is not in bucket {bucket.name}")
    step_prefix = step_logs_prefix(prefix, cluster_id, step_id)
    started = clock()
    client_log = driver_log = driver_key = driver_out = driver_out_key = None
    while True:
        if client_log is None:
            client_log = read_gz(bucket, step_prefix + "stderr.gz")
        application = application_id(client_log) if client_log is not None else None
        if application:
            driver_key = driver_log_key(prefix, cluster_id, application, client_log, "stderr")
            driver_out_key = driver_log_key(prefix, cluster_id, application, client_log, "stdout")
            driver_log = read_gz(bucket, driver_key)
            driver_out = read_gz(bucket, driver_out_key)
        remaining = wait_seconds - (clock() - started)
        if (
            driver_log is not None
            or driver_out is not None
            or (client_log is not None and application is None)
            or remaining <= 0
        ):
            break
        sleep(min(poll_seconds, remaining))
    # The Python side (stdout) says why in the job's words; the JVM's log (stderr) when it is silent.
    python_error = error_line(driver_out) if driver_out else None
    candidates = [(driver_out, driver_out_key)] if python_error else []
    candidates += [(driver_log, driver_key), (driver_out, driver_out_key), (client_log, step_prefix + "stderr.gz")]
    shown, shown_key = next(((text, key) for text, key in candidates if text is not None), (None, None))
    driver_keys = {key for key in (driver_key, driver_out_key) if key}
    return StepLogs(
        error_line=python_error
        or (error_line(driver_log) if driver_log is not None else None)
        or (error_line(client_log) if client_log is not None else None),
        tail=tail(shown) if shown is not None else "",
        tail_uri=bucket.uri(shown_key) if shown is not None else None,
        step_logs_uri=bucket.uri(step_prefix),
        driver_log_uri=bucket.uri(shown_key if shown_key in driver_keys else driver_key) if driver_keys else None,
        containers_uri=bucket.uri(containers_prefix(prefix, cluster_id)),
        waited_seconds=clock() - started,
    )


def failure_message(
    *,
    first_line: str,
    step_id: str,
    step_name: str | None,
    state: str,
    cluster_id: str,
    failure_details: dict | None,
    where: list[str],
) -> str:
    """The sensor's exception: `first_line` (the job's error, what the run report keeps), then
    the step, its state, EMR's own FailureDetails when it gave any, and where the logs are."""
    step = f"EMR step {step_id}" + (f" ({step_name})" if step_name else "")
    lines = [first_line, f"{step} is {state} on cluster {cluster_id}"]
    details = {k: v for k, v in (failure_details or {}).items() if v}
    if details:
        lines.append("EMR: " + ", ".join(f"{k} {v}" for k, v in details.items()))
    return "\n".join(lines + where)
