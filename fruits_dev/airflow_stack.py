"""`make airflow`: a real Airflow 3 on this machine, no Docker, in the foreground until Ctrl-C.

    python -m fruits_dev.airflow_stack            # what `make airflow` runs

Starts, as separate processes of this repository's venv: the API server (UI + REST API +
execution API), the scheduler (LocalExecutor: it runs the tasks), the dag-processor and the
triggerer; plus, in this process, an embedded S3 server (moto, as fruits_dev.s3_server) with the
pipeline's bucket. Everything binds to 127.0.0.1. The metadata DB is SQLite under the stack's
folder (default .cache/airflow-stack/, git-ignored) unless FRUITS_AIRFLOW_DB_URL names another
database (e.g. postgresql+psycopg2://...). Each process logs to <folder>/logs/<name>.log.

On the first start the bucket gets generated sample images (fruits_dev.samples); the bucket is
copied to <folder>/s3-snapshot/ when the stack stops and restored at the next start (moto keeps
everything in memory), so runs, ledger and reports survive a restart.

Settings (environment): FRUITS_AIRFLOW_PORT (8080), FRUITS_S3_PORT (9000),
FRUITS_AIRFLOW_PASSWORD (`admin`: local development only), FRUITS_AIRFLOW_HOME (the folder),
FRUITS_AIRFLOW_DB_URL, FRUITS_AIRFLOW_UNPAUSE_ALL (true: every DAG is unpaused at start, so
fruits_classifier runs on fruits_pipeline's assets; false: fruits_pipeline only); any FRUITS_*
pipeline setting (README, "Settings") passes through, with local defaults: FRUITS_SCHEDULE none
(manual runs), FRUITS_WEIGHTS none (offline), FRUITS_SENSOR_TIMEOUT 600,
FRUITS_SENSOR_POKE_INTERVAL 30. FRUITS_TRIGGER=sqs starts runs on S3 events instead
(docs/events.md): an SQS queue on the embedded server gets the landing prefix's notifications
and the triggerer's AssetWatcher starts fruits_pipeline when images land.

Tests start the same stack on free ports through `AirflowStack` (a context manager).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from fruits.settings import PROJECT_ROOT
from fruits_dev import runner, s3_server

DEFAULT_HOME = PROJECT_ROOT / ".cache" / "airflow-stack"
USER = "admin"
DAG_ID = "fruits_pipeline"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_KEYS = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}


class StackError(RuntimeError):
    """A problem the user can fix (port in use, stack already running, a process died)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    """Running, and not a zombie (an exited process its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no procfs (macOS): signal 0 is all there is
        return True
    return state != "Z"


@dataclass
class StackConfig:
    home: Path = DEFAULT_HOME
    api_port: int = 8080
    s3_port: int = 9000
    password: str = "admin"
    db_url: str | None = None  # None: SQLite in `home`
    s3_endpoint: str | None = None  # None: start an embedded moto server on s3_port
    bucket: str = "fruits"
    samples: tuple[int, int] = (6, 12)  # classes, images per class landed on first start
    persist_s3: bool = True  # copy the bucket to home/s3-snapshot on stop, restore on start
    dag_refresh_seconds: int = 30  # how soon the dag-processor sees a new DAG file
    unpause_all: bool = False  # unpause every parsed DAG at start (make airflow), else fruits_pipeline only
    trigger: str = "poll"  # sqs: a queue on the embedded server gets the landing prefix's S3 events (docs/events.md)
    env: dict[str, str] = field(default_factory=dict)  # extra environment of every process

    @classmethod
    def from_environment(cls) -> StackConfig:
        def port(name: str, default: int) -> int:
            raw = os.environ.get(name, "").strip() or str(default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StackError(f"{name} must be a TCP port, got {raw!r}")
            return int(raw)

        return cls(
            home=Path(os.environ.get("FRUITS_AIRFLOW_HOME") or DEFAULT_HOME).resolve(),
            api_port=port("FRUITS_AIRFLOW_PORT", 8080),
            s3_port=port("FRUITS_S3_PORT", 9000),
            password=os.environ.get("FRUITS_AIRFLOW_PASSWORD") or "admin",
            db_url=os.environ.get("FRUITS_AIRFLOW_DB_URL") or None,
            s3_endpoint=os.environ.get("FRUITS_S3_ENDPOINT") or None,
            bucket=os.environ.get("FRUITS_BUCKET") or "fruits",
            unpause_all=os.environ.get("FRUITS_AIRFLOW_UNPAUSE_ALL", "true").lower() in ("1", "true", "yes"),
            trigger=(os.environ.get("FRUITS_TRIGGER") or "poll").strip().lower(),
        )


class Api:
    """The REST API v2 with a token of the stack's user (POST /auth/token)."""

    def __init__(self, base_url: str, user: str, password: str):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.user, self.password = user, password
        self.http = httpx.Client(base_url=self.base_url, timeout=30)
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            response = self.http.post("/auth/token", json={"username": self.user, "password": self.password})
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs) -> dict:
        response = self.request("GET", path, **kwargs)
        response.raise_for_status()
        return response.json()

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        from datetime import datetime

        response = self.request(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"conf": conf or {}, "logical_date": datetime.now(UTC).isoformat()},
        )
        if response.status_code >= 400:
            raise StackError(f"trigger {dag_id}: {response.status_code} {response.text}")
        return response.json()["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        data = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return {ti["task_id"]: ti["state"] for ti in data["task_instances"]}

    def wait_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 2.0) -> str:
        """Wait until the run is over; return its state (success, failed)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{dag_id} {run_id} still {state} after {timeout:.0f}s: {self.task_states(dag_id, run_id)}"
                )
            time.sleep(poll)

    def close(self) -> None:
        self.http.close()


class AirflowStack:
    """API server, scheduler, dag-processor and triggerer (+ embedded S3), started and stopped together."""

    def __init__(self, config: StackConfig, *, echo=print):
        self.config = config
        self.home = Path(config.home).resolve()
        self.logs = self.home / "logs"
        self.pid_file = self.home / "stack.pid"
        self.echo = echo
        self.procs: dict[str, subprocess.Popen] = {}
        self._s3_server = None
        self.endpoint: str | None = None
        self.queue_url: str | None = None  # trigger=sqs: the embedded queue fruits_pipeline's watcher polls
        self.env: dict[str, str] = {}
        self.api: Api | None = None
        self._stopped = threading.Event()
        self._owns_pid_file = False

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.api_port}"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    # ------------------------------------------------------------------ start

    def __enter__(self) -> AirflowStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 300) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._clear_stale_pid_file()
        self._check_ports()
        self.pid_file.write_text(json.dumps({"supervisor": os.getpid(), "children": {}}))
        self._owns_pid_file = True
        self._start_s3()
        self._start_events()
        self.env = self._environment()
        self._write_env_file()
        self._migrate_db()
        for component in COMPONENTS:
            self._spawn(component)
        self._record_pids()
        self._wait_ready(timeout)

    def _clear_stale_pid_file(self) -> None:
        if not self.pid_file.exists():
            return
        try:
            recorded = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            recorded = {}
        supervisor = recorded.get("supervisor")
        if supervisor and supervisor != os.getpid() and pid_alive(supervisor):
            raise StackError(
                f"an Airflow stack is already running from {self.home} (pid {supervisor}): "
                f"stop it first (Ctrl-C in its terminal, or `kill {supervisor}`)"
            )
        leftovers = [pid for pid in recorded.get("children", {}).values() if pid_alive(pid)]
        for pid in leftovers:  # processes this stack started before it crashed (own process groups)
            self.echo(f"stopping pid {pid} left over by a previous stack that did not stop cleanly")
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 20
        while any(pid_alive(pid) for pid in leftovers) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leftovers:
            if pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.pid_file.unlink(missing_ok=True)

    def _check_ports(self) -> None:
        wanted = {"FRUITS_AIRFLOW_PORT (UI and API)": self.config.api_port}
        if not self.config.s3_endpoint:
            wanted["FRUITS_S3_PORT (embedded S3)"] = self.config.s3_port
        busy = [f"127.0.0.1:{port} ({name})" for name, port in wanted.items() if port_in_use(port)]
        if busy:
            raise StackError(
                "port in use: " + ", ".join(busy) + ". Another Airflow or S3 server is running "
                "there; stop it, or choose other ports, e.g. FRUITS_AIRFLOW_PORT=8081 "
                "FRUITS_S3_PORT=9001 make airflow"
            )

    def _start_s3(self) -> None:
        if self.config.s3_endpoint:
            self.endpoint = self.config.s3_endpoint
        else:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            self._s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.config.s3_port, verbose=False)
            self._s3_server.start()
            self.endpoint = f"http://127.0.0.1:{self.config.s3_port}"
        s3 = s3_server.client(self.endpoint)
        s3_server.ensure_bucket(s3, self.config.bucket)
        snapshot = self.home / "s3-snapshot"
        if self.config.persist_s3 and self._s3_server and snapshot.exists():
            restored = s3_server.upload_tree(s3, self.config.bucket, snapshot, "")
            self.echo(f"restored {restored} objects of s3://{self.config.bucket}/ from {snapshot}")
        if self.config.samples and not s3.list_objects_v2(Bucket=self.config.bucket, Prefix="landing/").get("KeyCount"):
            from fruits_dev.samples import generate_samples

            classes, per_class = self.config.samples
            root = self.home / "samples"
            samples = generate_samples(root, n_classes=classes, per_class=per_class, seed=0)
            s3_server.upload_tree(s3, self.config.bucket, root, "landing/")
            self.echo(f"landed {len(samples.images)} sample images under s3://{self.config.bucket}/landing/")

    def _start_events(self) -> None:
        """trigger=sqs: an SQS queue on the embedded server, and the bucket's notification to it (moto
        delivers S3 events to its own SQS), configured as on AWS by fruits.events.configure."""
        if self.config.trigger == "poll":
            return
        if self.config.trigger != "sqs":
            raise StackError(f"FRUITS_TRIGGER must be poll or sqs, got {self.config.trigger!r}")
        if not self._s3_server:
            raise StackError(
                "FRUITS_TRIGGER=sqs needs the embedded S3 server (unset FRUITS_S3_ENDPOINT): "
                "MinIO cannot publish S3 events to SQS"
            )
        import boto3

        from fruits import events
        from fruits.settings import DEFAULT_REGION

        sqs = boto3.client(
            "sqs",
            endpoint_url=self.endpoint,
            region_name=DEFAULT_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.queue_url = sqs.create_queue(QueueName=f"{self.config.bucket}-landing")["QueueUrl"]
        landing = self.config.env.get("FRUITS_LANDING_PREFIX") or os.environ.get("FRUITS_LANDING_PREFIX") or "landing/"
        events.configure(
            s3_server.client(self.endpoint),
            sqs,
            bucket=self.config.bucket,
            queue_url=self.queue_url,
            landing_prefix=landing,
        )
        self.echo(f"S3 events of s3://{self.config.bucket}/{landing} go to {self.queue_url}")

    def _secrets(self) -> dict[str, str]:
        """Generated once per stack folder, so sessions and tokens survive restarts."""
        path = self.home / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        from cryptography.fernet import Fernet

        values = {
            "jwt_secret": secrets.token_urlsafe(64),
            "api_secret_key": secrets.token_urlsafe(32),
            "fernet_key": Fernet.generate_key().decode(),
        }
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def _environment(self) -> dict[str, str]:
        cfg = self.config
        keys = self._secrets()
        passwords = self.home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({USER: cfg.password}))
        passwords.chmod(0o600)
        db_url = cfg.db_url or f"sqlite:///{self.home / 'airflow.db'}"
        pipeline_defaults = {
            "FRUITS_SCHEDULE": "none",
            "FRUITS_WEIGHTS": "none",
            "FRUITS_SENSOR_TIMEOUT": "600",
            "FRUITS_SENSOR_POKE_INTERVAL": "30",
        }
        extra = {key: os.environ.get(key) or value for key, value in pipeline_defaults.items()}
        extra.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # fruits_pipeline is unpaused once parsed
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(cfg.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                "AIRFLOW__API_AUTH__JWT_ISSUER": "fruits-pipeline-local",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(cfg.dag_refresh_seconds),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
                "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(self.logs / "dag-processor-files"),
                "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(self.endpoint),
                "FRUITS_BUCKET": cfg.bucket,
            }
        )
        if self.queue_url:
            extra.update({"FRUITS_TRIGGER": "sqs", "FRUITS_SQS_QUEUE_URL": self.queue_url})
        extra.update(cfg.env)
        env = runner.airflow_env(self.home, extra=extra)
        env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        return env

    EXPORTED_PREFIXES = ("AIRFLOW", "FRUITS_", "PYSPARK_", "SPARK_SUBMIT_OPTS")

    def exported_env(self) -> dict[str, str]:
        return {k: v for k, v in sorted(self.env.items()) if k.startswith(self.EXPORTED_PREFIXES)}

    def _write_env_file(self) -> None:
        import shlex

        bin_dir = Path(sys.executable).parent
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.exported_env().items()]
        lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
        path = self.home / "env.sh"
        path.write_text(
            "# source this file to use the `airflow` CLI against the running stack\n" + "\n".join(lines) + "\n"
        )
        path.chmod(0o600)

    def _migrate_db(self) -> None:
        url = self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        marker = self.home / f".db-migrated-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
        if marker.exists():
            return
        self.echo("migrating the metadata DB (first start only)")
        with open(self.log_file("db-migrate"), "a") as log:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
            )
        if done.returncode != 0:
            raise StackError(f"`airflow db migrate` failed; see {self.log_file('db-migrate')}")
        marker.touch()

    def _spawn(self, component: str) -> None:
        command = [sys.executable, "-m", "airflow", component]
        if component == "api-server":
            command += ["--host", "127.0.0.1", "--port", str(self.config.api_port), "--workers", "1"]
        elif component in ("scheduler", "triggerer"):
            # Their log servers would listen on every interface (serve_logs binds to ""); the API
            # server reads the task logs from the shared folder instead.
            command += ["--skip-serve-logs"]
        log = open(self.log_file(component), "a")
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        # A session of its own: Ctrl-C reaches this supervisor only, which then stops each
        # process group (the component and the task and Spark processes it started) in order.
        self.procs[component] = subprocess.Popen(
            command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
            start_new_session=True,
        )
        log.close()

    def _record_pids(self) -> None:
        self.pid_file.write_text(
            json.dumps({"supervisor": os.getpid(), "children": {n: p.pid for n, p in self.procs.items()}})
        )

    def dead_components(self) -> dict[str, int]:
        return {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}

    def tail(self, component: str, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file(component).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        status = "api-server not answering"
        self.api = Api(self.url, USER, self.config.password)
        while time.monotonic() < deadline:
            dead = self.dead_components()
            if dead:
                name, code = next(iter(dead.items()))
                raise StackError(
                    f"airflow {name} exited with status {code} while starting; "
                    f"{self.log_file(name)} ends with:\n{self.tail(name)}"
                )
            try:
                health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                unhealthy = [
                    c
                    for c in ("metadatabase", *HEALTH_KEYS.values())
                    if (health.get(c) or {}).get("status") != "healthy"
                ]
                if unhealthy:
                    status = f"waiting for {', '.join(unhealthy)}"
                elif self.api.request("GET", f"/api/v2/dags/{DAG_ID}").status_code != 200:
                    status = f"waiting for the dag-processor to parse {DAG_ID}"
                else:
                    dags = [DAG_ID]
                    if self.config.unpause_all:  # e.g. fruits_classifier, which fruits_pipeline's assets trigger
                        dags += [
                            d["dag_id"]
                            for d in self.api.get("/api/v2/dags", params={"limit": 100})["dags"]
                            if d["dag_id"] != DAG_ID
                        ]
                    for dag_id in dags:
                        self.api.request(
                            "PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False}
                        ).raise_for_status()
                    return
            except (httpx.HTTPError, ValueError) as exc:
                status = f"api-server not answering ({type(exc).__name__})"
            time.sleep(1)
        raise StackError(f"the stack was not ready after {timeout:.0f}s: {status}; logs in {self.logs}")

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 30) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        for proc in self.procs.values():  # SIGTERM to every group first, then wait for all
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            try:  # the group too: task processes and Spark JVMs left behind by a component
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=10)
        if self.api:
            self.api.close()
        if self._s3_server:
            if self.config.persist_s3:
                try:
                    from fruits_dev.demo import snapshot_bucket

                    snapshot = self.home / "s3-snapshot"
                    copied = snapshot_bucket(s3_server.client(self.endpoint), self.config.bucket, snapshot)
                    self.echo(f"copied {copied} objects of s3://{self.config.bucket}/ to {snapshot}")
                except Exception as exc:  # noqa: BLE001 - the stack still stops
                    self.echo(f"could not copy the bucket: {exc}")
            self._s3_server.stop()
            self._s3_server = None
        if self._owns_pid_file:  # never another running stack's
            self.pid_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ foreground

    def banner(self) -> str:
        return "\n".join(
            [
                "",
                f"  Airflow UI     {self.url}   user {USER}, password {self.config.password}"
                + ("   (default password: local development only)" if self.config.password == "admin" else ""),
                f"  Fruits view    {self.url}/plugin/fruits   (or {self.url}/fruits/)",
                f"  S3 endpoint    {self.endpoint}   bucket {self.config.bucket}, key/secret testing/testing",
                *(
                    [f"  S3 events      SQS queue {self.queue_url}: images landing start fruits_pipeline"]
                    if self.queue_url
                    else []
                ),
                f"  metadata DB    {self.env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'].split('@')[-1]}",
                f"  logs           {self.logs}/<component>.log, tasks under {self.logs}/tasks",
                f"  airflow CLI    source {self.home / 'env.sh'} && airflow dags list",
                "  Ctrl-C stops every process of the stack.",
                "",
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make airflow", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    try:
        config = StackConfig.from_environment()
    except StackError as exc:
        print(f"[airflow] {exc}", file=sys.stderr)
        return 2
    stack = AirflowStack(config, echo=lambda message: print(f"[airflow] {message}", flush=True))
    stopping = threading.Event()
    started = threading.Event()

    def on_signal(signum, _frame):
        if not started.is_set():
            raise KeyboardInterrupt  # still starting: stop what was started, now
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"[airflow] starting Airflow in {stack.home} (API server, scheduler, dag-processor, triggerer)", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"[airflow] {exc}", file=sys.stderr)
        stack.stop()
        return 1
    except KeyboardInterrupt:
        print("[airflow] interrupted while starting; stopping", flush=True)
        stack.stop()
        return 130
    except BaseException:
        stack.stop()
        raise
    started.set()
    print(stack.banner(), flush=True)
    code = 0
    while not stopping.wait(1):
        dead = stack.dead_components()
        if dead:
            name, status = next(iter(dead.items()))
            print(
                f"[airflow] airflow {name} exited with status {status}; {stack.log_file(name)} ends with:\n"
                f"{stack.tail(name)}\n[airflow] stopping the stack",
                file=sys.stderr,
                flush=True,
            )
            code = 1
            break
    print("[airflow] stopping ...", flush=True)
    stack.stop()
    print("[airflow] stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
