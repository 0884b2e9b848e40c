"""One real Airflow stack (fruits_dev.airflow_stack on free ports) shared by the test modules that
use the `airflow_stack` fixture (system tests, browser test): started by the first of them,
stopped after the last one, so that its idle processes do not slow the rest of the suite.
Import the fixture with `from airflow_stack_support import airflow_stack`."""

from __future__ import annotations

import json
import time

import pytest

from conftest import TEST_IMAGE_SIZE
from fruits_dev import s3_server
from fruits_dev.airflow_stack import DAG_ID, AirflowStack, StackConfig, free_port

BUCKET = "fruits"
CONF = {"weights": "none", "image_size": TEST_IMAGE_SIZE, "sensor_timeout": 0}
SAMPLES = (3, 3)  # classes, images per class landed when the stack starts
RUN_TIMEOUT = 420
_STACK = pytest.StashKey[AirflowStack]()


class Stack:
    """The running stack with the helpers tests need (REST API, bucket)."""

    def __init__(self, stack: AirflowStack):
        self.stack = stack
        self.api = stack.api
        self.url = stack.url
        self.s3 = s3_server.client(stack.endpoint)

    def trigger(self, **conf) -> str:
        return self.api.trigger(DAG_ID, {**CONF, **conf})

    def wait(self, run_id: str, timeout: float = RUN_TIMEOUT, seen: set | None = None) -> str:
        """Wait for the run to end (polling every second); record the task states seen on the way."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.api.run_state(DAG_ID, run_id)
            if seen is not None:
                seen.update(s for s in self.api.task_states(DAG_ID, run_id).values() if s)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{run_id} still {state} after {timeout}s: "
                    f"{self.api.task_states(DAG_ID, run_id)}\n{self.stack.tail('scheduler')}"
                )
            time.sleep(1)

    def tasks(self, run_id: str) -> dict:
        return self.api.task_states(DAG_ID, run_id)

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def json(self, key: str):
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def landed(self) -> int:
        return len(self.keys("landing/"))


def _later_modules_use_it(request) -> bool:
    items = request.session.items
    mine = [i for i, item in enumerate(items) if item.module is request.module]
    return any("airflow_stack" in item.fixturenames for item in items[mine[-1] + 1 :]) if mine else False


def start_stack(home) -> AirflowStack:
    config = StackConfig(
        home=home,
        api_port=free_port(),
        s3_port=free_port(),
        bucket=BUCKET,
        samples=SAMPLES,
        persist_s3=False,
        dag_refresh_seconds=10,
        env={
            "FRUITS_SENSOR_POKE_INTERVAL": "15",  # > the ~5 s a task's supervisor takes to exit: apache/airflow#71172
            "FRUITS_TASK_RETRIES": "0",
            "FRUITS_IMAGE_SIZE": str(TEST_IMAGE_SIZE),
            "FRUITS_SPARK_DRIVER_MEMORY": "2g",
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        },
    )
    stack = AirflowStack(config, echo=lambda message: print(f"[stack] {message}", flush=True))
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def airflow_stack(request, tmp_path_factory) -> Stack:
    stash = request.config.stash
    stack = stash.get(_STACK, None)
    if stack is None:
        stack = start_stack(tmp_path_factory.mktemp("airflow-stack"))
        stash[_STACK] = stack
        request.config.add_cleanup(stack.stop)
    yield Stack(stack)
    if not _later_modules_use_it(request):
        stack.stop()
        del stash[_STACK]
