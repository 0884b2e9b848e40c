"""A local EMR: moto's EMR API, with every step executed for real by EMR's Spark.

moto accepts RunJobFlow and AddJobFlowSteps but never runs a step. `LocalEmr` plays the cluster:
a thread takes the steps of the clusters that log to its bucket, one after the other (the
clusters' StepConcurrencyLevel is 1), and runs each step's exact command line as a node would:

* `command-runner.jar` + `spark-submit ...`: the script and `--py-files` are fetched from S3,
  never from the checkout; spark-submit is EMR's stack's (fruits_dev/emr_stack.py: Spark 3.5
  and the node's Python packages);
* `--deploy-mode cluster` is played by a Spark master with executor JVMs of their own
  (`local-cluster[N,1,MB]`, N >= 2); the driver runs in the step's process, as YARN's
  application master would run it on a node;
* the cluster's Configurations apply as EMR applies them: `spark-defaults` as Spark settings,
  `spark-env` exports in the environment; paths of the bootstrap's virtualenv
  (/opt/fruits/venv) point at EMR's stack, which plays it;
* `s3://` goes through S3A to the same S3 endpoint, as EMRFS would with the nodes' role;
* logs land under the cluster's LogUri as EMR lays them out:
  `<LogUri><cluster-id>/steps/<step-id>/{controller,stdout,stderr}.gz` (stderr: what
  spark-submit's YARN client prints in cluster mode) and the driver's own output in
  `<LogUri><cluster-id>/containers/<application-id>/<container-id>/{stdout,stderr}.gz`;
* a non-zero exit makes the step FAILED, with EMR's FailureDetails (reason, message, log file).

Used by the EMR tests and `make demo-emr`. The moto server must run in this process: the thread
reads and updates moto's cluster objects directly.
"""

from __future__ import annotations

import gzip
import os
import shlex
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fruits import layout, spark_s3a
from fruits.backends.emr import cluster as emr_cluster
from fruits_dev.emr_stack import EmrStack

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED")
COMMAND_RUNNER = "command-runner.jar"
# spark-submit options that take no value (everything else is `--option value`).
FLAG_OPTIONS = {"--verbose", "--supervise", "--version", "--help"}


def dag_settings(poll_seconds: int) -> dict[str, str]:
    """The FRUITS_* settings of a DAG whose EMR is this one: it polls every `poll_seconds`, and a
    failed step's logs need no long wait (they are written before the step ends; EMR takes minutes)."""
    return {"FRUITS_EMR_POLL_SECONDS": str(poll_seconds), "FRUITS_EMR_LOG_WAIT": "30"}


def all_clusters() -> list:
    """Every cluster moto holds in this process, whatever account or region it landed in."""
    from moto.emr.models import emr_backends

    return [
        cluster
        for account in list(dict.values(emr_backends))
        for backend in list(dict.values(account))
        for cluster in list(backend.clusters.values())
    ]


def _failed_step_class():
    """moto's Step, with the FailureDetails EMR gives a FAILED step (moto has no such field)."""
    from moto.emr.models import Step

    class FailedStep(Step):
        @property
        def status(self) -> dict:
            status = super().status
            status["FailureDetails"] = self.failure_details
            return status

    return FailedStep


@dataclass
class SparkSubmit:
    """A `spark-submit [options] script args...` command line, split the way spark-submit reads it."""

    options: list[tuple[str, str | None]]
    script: str
    job_args: list[str]

    @classmethod
    def parse(cls, args: list[str]) -> SparkSubmit:
        if args[:1] != ["spark-submit"]:
            raise ValueError(f"not a spark-submit step: {shlex.join(args[:3])}")
        options, i = [], 1
        while i < len(args) and args[i].startswith("--"):
            if args[i] in FLAG_OPTIONS:
                options.append((args[i], None))
                i += 1
            else:
                options.append((args[i], args[i + 1] if i + 1 < len(args) else None))
                i += 2
        if i >= len(args):
            raise ValueError("spark-submit step without an application")
        return cls(options=options, script=args[i], job_args=list(args[i + 1 :]))

    def option(self, name: str) -> str | None:
        return next((value for key, value in self.options if key == name), None)


@dataclass
class ExecutedStep:
    cluster_id: str
    step_id: str
    name: str
    jar: str
    args: list[str]
    state: str = "RUNNING"
    exit_code: int | None = None
    application_id: str | None = None
    seconds: float = 0.0
    problem: str | None = None
    log_dir: str = ""


@dataclass
class LocalEmr:
    """Runs the steps of the clusters whose LogUri is in `bucket`, on `stack`, against `endpoint_url`."""

    s3: object  # a boto3 S3 client of the endpoint (fetches the code, writes the logs)
    endpoint_url: str
    bucket: str
    stack: EmrStack
    work_dir: Path
    region: str
    access_key: str = "testing"
    secret_key: str = "testing"
    executors: int = 2
    executor_memory_mb: int = 1024
    on_step: Callable[[ExecutedStep], None] | None = None
    executed: list[ExecutedStep] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.work_dir = Path(self.work_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-emr", daemon=True)
        self._applications = 0

    # -- the cluster's life ------------------------------------------------------------------
    def start(self) -> LocalEmr:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def owns(self, cluster) -> bool:
        return (cluster.log_uri or "").startswith(f"s3://{self.bucket}/")

    def ready(self, cluster, step) -> bool:
        """Whether to run `step` now (subclasses may hold a step back)."""
        return True

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                for cluster in all_clusters():
                    if cluster.state not in ("WAITING", "RUNNING") or not self.owns(cluster):
                        continue
                    pending = [s for s in cluster.steps if s.state not in TERMINAL]
                    if pending and self.ready(cluster, pending[0]):  # one step at a time, in order
                        self._execute(cluster, pending[0])
            except Exception:  # noqa: BLE001 - reported to whoever drives the local EMR
                self.errors.append(traceback.format_exc())

    def _execute(self, cluster, step) -> None:
        record = ExecutedStep(
            cluster_id=cluster.id, step_id=step.id, name=step.name, jar=step.jar, args=list(step.args)
        )
        step.state, step.start_date_time = "RUNNING", datetime.now(UTC)
        cluster.state = "RUNNING"
        started = time.monotonic()
        try:
            self.run_step(cluster, step, record)
        except Exception as exc:  # noqa: BLE001 - the step fails, the local EMR goes on
            record.exit_code, record.problem = record.exit_code or 1, f"{type(exc).__name__}: {exc}"
            self.errors.append(traceback.format_exc())
        record.seconds = round(time.monotonic() - started, 1)
        record.state = "COMPLETED" if record.exit_code == 0 else "FAILED"
        step.end_date_time = datetime.now(UTC)
        if record.state == "FAILED":
            step.__class__ = _failed_step_class()
            step.failure_details = {
                "Reason": "Unknown Error.",
                "Message": record.problem or "",
                "LogFile": f"{record.log_dir}stderr.gz",
            }
            step.last_state_change_reason = record.problem
        step.state = record.state
        self.executed.append(record)
        if self.on_step:
            self.on_step(record)
        if not [s for s in cluster.steps if s.state not in TERMINAL] and cluster.state == "RUNNING":
            cluster.state = "WAITING"

    # -- one step ----------------------------------------------------------------------------
    def run_step(self, cluster, step, record: ExecutedStep) -> None:
        log_uri = cluster.log_uri if cluster.log_uri.endswith("/") else cluster.log_uri + "/"
        record.log_dir = f"{log_uri}{cluster.id}/steps/{step.id}/"
        workdir = self.work_dir / cluster.id / step.id
        workdir.mkdir(parents=True, exist_ok=True)
        controller = [
            f"{_now()} INFO startExec 'hadoop jar /var/lib/aws/emr/step-runner/hadoop-jars/"
            f"{step.jar} {shlex.join(step.args)}'"
        ]
        if step.jar != COMMAND_RUNNER:
            return self._finish(
                record,
                controller,
                1,
                f"cannot run jar {step.jar}: the local EMR runs {COMMAND_RUNNER} steps only\n",
                None,
            )
        try:
            submit = SparkSubmit.parse(list(step.args))
        except ValueError as exc:
            return self._finish(record, controller, 1, f"{exc}\n", None)
        try:
            script = self._fetch(submit.script, workdir)
            py_files = [self._fetch(uri, workdir) for uri in (submit.option("--py-files") or "").split(",") if uri]
        except FileNotFoundError as exc:
            message = f'Exception in thread "main" java.io.FileNotFoundException: {exc}'
            return self._finish(record, controller, 1, message + "\n", None)
        self._applications += 1
        stamp = int(cluster.creation_datetime.timestamp() * 1000) if cluster.creation_datetime else 0
        record.application_id = f"application_{stamp}_{self._applications:04d}"
        container_id = f"container_{stamp}_{self._applications:04d}_01_000001"
        command = self.command(cluster, submit, script, py_files)
        controller.append(f"{_now()} INFO playing cluster deploy mode on {self.master()}: {shlex.join(command)}")
        proc = subprocess.run(command, capture_output=True, text=True, env=self.environment(cluster), cwd=workdir)
        (workdir / "driver.stdout").write_text(proc.stdout, encoding="utf-8")  # a local copy, for whoever debugs
        (workdir / "driver.stderr").write_text(proc.stderr, encoding="utf-8")
        container_dir = f"{log_uri}{cluster.id}/containers/{record.application_id}/{container_id}/"
        self._put_log(container_dir + "stdout.gz", proc.stdout)
        self._put_log(container_dir + "stderr.gz", proc.stderr)
        client_log = _yarn_client_log(record.application_id, proc.returncode)
        return self._finish(record, controller, proc.returncode, client_log, container_dir)

    def _finish(
        self, record: ExecutedStep, controller: list[str], returncode: int, stderr: str, container_dir: str | None
    ) -> None:
        """The step's own logs, and its outcome (spark-submit's YARN client exits 1 on a failed app).
        In cluster deploy mode the client prints nothing on stdout: the driver's output is the container's."""
        record.exit_code = 0 if returncode == 0 else 1
        if record.exit_code:
            record.problem = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {returncode}"
            controller.append(f"{_now()} WARN Step failed with exitCode {record.exit_code}")
        else:
            controller.append(f"{_now()} INFO Step succeeded with exitCode 0")
        if container_dir:
            controller.append(f"{_now()} INFO driver logs: {container_dir}")
        self._put_log(record.log_dir + "controller.gz", "\n".join(controller) + "\n")
        self._put_log(record.log_dir + "stdout.gz", "")
        self._put_log(record.log_dir + "stderr.gz", stderr)

    def master(self) -> str:
        return f"local-cluster[{self.executors},1,{self.executor_memory_mb}]"

    def command(self, cluster, submit: SparkSubmit, script: Path, py_files: list[Path]) -> list[str]:
        """The node's spark-submit, with the step's own options (the deploy mode and fetched files aside)."""
        command = [str(self.stack.spark_submit), "--master", self.master(), "--deploy-mode", "client"]
        for name, value in submit.options:
            if name in ("--deploy-mode", "--master", "--py-files"):
                continue
            command += [name] if value is None else [name, value]
        if py_files:
            command += ["--py-files", ",".join(str(p) for p in py_files)]
        conf = {
            "spark.ui.enabled": "false",
            "spark.executor.memory": f"{max(self.executor_memory_mb - 300, 512)}m",
            "spark.jars": ",".join(spark_s3a.resolved_jars(self.stack.spark_version)),
            **spark_s3a.s3a_conf(
                endpoint_url=self.endpoint_url,
                region=self.region,
                access_key=self.access_key,
                secret_key=self.secret_key,
            ),
            **self._on_this_node(_classification(cluster, "spark-defaults")),
        }
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        return command + [str(script), *submit.job_args]

    def environment(self, cluster) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PYSPARK_", "SPARK_", "AWS_", "AIRFLOW", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS"))
        }
        env["SPARK_HOME"] = str(self.stack.spark_home)
        env["PATH"] = f"{self.stack.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        exports = next(
            (
                c.get("Properties", {})
                for c in _classification(cluster, "spark-env", nested=True)
                if c.get("Classification") == "export"
            ),
            {},
        )
        env.update(self._on_this_node(exports))
        return env

    def _on_this_node(self, properties: dict) -> dict[str, str]:
        """Configuration values with the bootstrap's virtualenv path pointing at EMR's stack."""
        return {
            key: str(value).replace(emr_cluster.VENV_DIR, str(self.stack.root)) for key, value in properties.items()
        }

    def _fetch(self, uri: str, workdir: Path) -> Path:
        """What EMR does with an s3:// application or --py-files entry: a local copy."""
        if not uri.startswith("s3://"):
            raise FileNotFoundError(f"File {uri} does not exist (the local EMR fetches s3:// URIs only)")
        bucket, key = layout.split_s3_uri(uri)
        target = workdir / key.rsplit("/", 1)[-1]
        try:
            self.s3.download_file(bucket, key, str(target))
        except Exception as exc:  # noqa: BLE001 - botocore's 404 is a ClientError
            raise FileNotFoundError(f"File {uri} does not exist") from exc
        return target

    def _put_log(self, uri: str, text: str) -> None:
        bucket, key = layout.split_s3_uri(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text.encode("utf-8")))


def _classification(cluster, name: str, nested: bool = False) -> dict | list:
    """A classification of the cluster's Configurations (its Properties, or its nested list)."""
    for configuration in getattr(cluster, "configurations", None) or []:
        if configuration.get("Classification") == name:
            return configuration.get("Configurations", []) if nested else configuration.get("Properties", {})
    return [] if nested else {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _yarn_client_log(application_id: str, returncode: int) -> str:
    """What spark-submit's YARN client prints in cluster deploy mode: the application and its end."""
    state, final = ("FINISHED", "SUCCEEDED") if returncode == 0 else ("FINISHED", "FAILED")
    lines = [
        f"{_now()} INFO Client: Submitting application {application_id} to ResourceManager",
        f"{_now()} INFO YarnClientImpl: Submitted application {application_id}",
        f"{_now()} INFO Client: Application report for {application_id} (state: ACCEPTED)",
        f"{_now()} INFO Client: Application report for {application_id} (state: RUNNING)",
        f"{_now()} INFO Client: Application report for {application_id} (state: {state})",
        f"{_now()} INFO Client: ",
        "\t client token: N/A",
        f"\t diagnostics: {'N/A' if returncode == 0 else f'User application exited with status {returncode}'}",
        f"\t final status: {final}",
    ]
    if returncode != 0:
        lines.append(
            f'Exception in thread "main" org.apache.spark.SparkException: Application {application_id} '
            f"finished with failed status"
        )
    return "\n".join(lines) + "\n"
