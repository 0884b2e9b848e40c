"""The EMR backend under a real triggerer: `python -m fruits_dev.airflow_stack` (what `make airflow`
runs) with FRUITS_COMPUTE=emr against moto's EMR + S3, and the local EMR running the steps on EMR's
Spark (fruits_dev/local_emr.py).

The step sensors and the terminate task are deferrable: with a scheduler and a triggerer running
as separate processes, they must hand their wait to the triggerer and complete from its events.
A failed step still terminates the cluster and fails the run. Ctrl-C (SIGINT) then stops every
process the stack started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest
from test_emr_runs import cluster_of_run, start_local_emr

from fruits_dev import local_emr
from fruits_dev.airflow_stack import DAG_ID, USER, Api, free_port, pid_alive
from fruits_dev.local_emr import LocalEmr
from fruits_dev.samples import generate_samples

pytestmark = pytest.mark.spark

BUCKET = "fruits-emr-triggerer"
CONF = {"weights": "none", "image_size": 32, "sensor_timeout": 0}


class DeferralGatedEmr(LocalEmr):
    """Runs a step only once its sensor is deferred: EMR steps take minutes, moto's would be done
    before the sensor's first look, and the sensor would then never need the triggerer."""

    SENSOR = {"featurize.py": "emr.wait_featurize", "pca.py": "emr.wait_pca"}

    def __post_init__(self):
        super().__post_init__()
        self.api: Api | None = None
        self.run_id: str | None = None
        self.deferred_seen: set[str] = set()
        self._last_look = 0.0

    def ready(self, cluster, step) -> bool:
        script = next((a.rsplit("/", 1)[-1] for a in step.args if a.endswith(".py")), "")
        sensor = self.SENSOR.get(script)
        if sensor and sensor not in self.deferred_seen:
            if not (self.api and self.run_id) or time.monotonic() - self._last_look < 0.5:
                return False
            self._last_look = time.monotonic()
            if self.api.task_states(DAG_ID, self.run_id).get(sensor) != "deferred":
                return False
            self.deferred_seen.add(sensor)
        return True


class EmrStack:
    def __init__(self, tmp):
        self.tmp = tmp
        self.server, self.endpoint, self.s3, self.emr = start_local_emr(BUCKET, tmp / "emr", DeferralGatedEmr)
        self.home = tmp / "stack"
        self.port = free_port()
        self.password = secrets.token_urlsafe(12)
        self.landed = 0
        self.proc = None

    def land(self, **kwargs):
        self.landed += 1
        root = self.tmp / f"samples-{self.landed}"
        generate_samples(
            root,
            labels=["Apple Red 1", "Banana"],
            n_classes=2,
            start_index=100 * self.landed,
            seed=self.landed,
            **kwargs,
        )
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.s3.upload_file(str(path), BUCKET, "landing/" + path.relative_to(root).as_posix())

    def start(self, timeout: float = 300) -> None:
        env = {
            **os.environ,
            "FRUITS_AIRFLOW_HOME": str(self.home),
            "FRUITS_AIRFLOW_PORT": str(self.port),
            "FRUITS_AIRFLOW_PASSWORD": self.password,
            "FRUITS_S3_ENDPOINT": self.endpoint,
            "FRUITS_BUCKET": BUCKET,
            "FRUITS_COMPUTE": "emr",
            **local_emr.dag_settings(poll_seconds=1),
            "FRUITS_TASK_RETRIES": "0",
            "FRUITS_SENSOR_POKE_INTERVAL": "15",
            "FRUITS_AIRFLOW_UNPAUSE_ALL": "false",
        }  # fruits_pipeline only: no classifier runs here
        self.out = open(self.tmp / "stack.out", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fruits_dev.airflow_stack"],
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops every process" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stack did not start:\n{self.output()[-4000:]}")
            time.sleep(1)
        self.api = Api(f"http://127.0.0.1:{self.port}", USER, self.password)
        self.emr.api = Api(self.api.base_url, USER, self.password)  # a client of its own thread

    def output(self) -> str:
        return (self.tmp / "stack.out").read_text(errors="replace")

    def run(self, **conf) -> tuple[str, str, dict]:
        run_id = self.api.trigger(DAG_ID, {**CONF, **conf})
        self.emr.run_id, self.emr.deferred_seen = run_id, set()
        state = self.api.wait_run(DAG_ID, run_id, timeout=900, poll=1)  # real Spark steps: minutes each
        assert not self.emr.errors, self.emr.errors
        return run_id, state, self.api.task_states(DAG_ID, run_id)

    def log(self, component: str) -> str:
        return (self.home / "logs" / f"{component}.log").read_text(errors="replace")

    def task_log(self, run_id: str, task_id: str) -> str:
        folder = self.home / "logs" / "tasks" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=90)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.out.close()
        self.emr.stop()
        if self.emr.api:
            self.emr.api.close()
        self.server.stop()


@pytest.fixture(scope="module")
def emr_stack(tmp_path_factory):
    stack = EmrStack(tmp_path_factory.mktemp("emr-triggerer"))
    try:
        stack.land(per_class=2)
        stack.start()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def succeeded(emr_stack):
    return emr_stack.run()


@pytest.fixture(scope="module")
def failed(emr_stack, succeeded):
    """A run whose featurize step fails for a real reason: its weights file is not one."""
    emr_stack.land(per_class=1)
    emr_stack.s3.put_object(Bucket=BUCKET, Key="models/broken.weights.h5", Body=b"not an HDF5 file")
    return emr_stack.run(weights=f"s3://{BUCKET}/models/broken.weights.h5")


DEFERRABLE = ("emr.wait_featurize", "emr.wait_pca", "emr.terminate_cluster")


def test_the_step_sensors_and_the_terminate_task_complete_through_the_triggerer(emr_stack, succeeded):
    run_id, state, tasks = succeeded
    assert state == "success" and set(tasks.values()) == {"success"}, (tasks, emr_stack.log("scheduler")[-3000:])
    assert cluster_of_run(run_id).state == "TERMINATED"
    assert emr_stack.emr.deferred_seen == {"emr.wait_featurize", "emr.wait_pca"}
    for task_id in DEFERRABLE:  # each paused as deferred, and resumed on its trigger's event
        log = emr_stack.task_log(run_id, task_id)
        assert "Pausing task as DEFERRED" in log and "Trigger fired event" in log, f"{task_id}:\n{log[-2000:]}"
    report = json.loads(
        emr_stack.s3.get_object(Bucket=BUCKET, Key=f"reports/{run_id.replace(':', '_').replace('+', '_')}.json")[
            "Body"
        ].read()
    )
    assert report["status"] == "success" and report["compute"] == "emr" and report["features_rows"] == 4


def test_a_failed_step_still_terminates_the_cluster_and_fails_the_run(emr_stack, failed):
    run_id, state, tasks = failed
    assert state == "failed", tasks
    assert tasks["emr.wait_featurize"] == "failed" and tasks["emr.add_pca_step"] == "upstream_failed", tasks
    assert tasks["emr.terminate_cluster"] == "success", tasks
    # The sensor resumed from the triggerer's failure event and read the job's error from the driver's log.
    log = emr_stack.task_log(run_id, "emr.wait_featurize")
    assert "Trigger fired event" in log and "featurize: error: cannot load the weights file" in log, log[-3000:]
    assert tasks["validate"] == tasks["commit_batch"] == "upstream_failed", tasks
    assert cluster_of_run(run_id).state == "TERMINATED"
    assert (
        len(json.loads(emr_stack.s3.get_object(Bucket=BUCKET, Key="state/ledger.json")["Body"].read())["batches"]) == 1
    )


def test_ctrl_c_stops_every_process_of_the_stack(emr_stack, succeeded, failed):
    recorded = json.loads((emr_stack.home / "stack.pid").read_text())
    children = list(recorded["children"].values())
    assert recorded["supervisor"] == emr_stack.proc.pid and len(children) == 4
    assert emr_stack.interrupt() == 0, emr_stack.output()[-3000:]
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if pid_alive(pid)]
    assert not (emr_stack.home / "stack.pid").exists()
    assert "[airflow] stopped" in emr_stack.output()
