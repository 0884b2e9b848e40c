"""fruits_pipeline under a real Airflow: API server, scheduler (LocalExecutor), dag-processor and
triggerer as separate processes (fruits_dev.airflow_stack, the code behind `make airflow`, on free
ports), runs triggered through the REST API; and the Fruits view plugin served by that API server.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import pytest
from airflow_stack_support import BUCKET, SAMPLES, Stack, airflow_stack  # noqa: F401 - the fixture

from fruits_dev.airflow_stack import COMPONENTS

pytestmark = pytest.mark.spark

SENSOR_TIMEOUT = 15


def unpause(airflow_stack: Stack, dag_id: str, timeout: float = 60) -> None:
    """Unpause a DAG once the dag-processor has parsed it."""
    deadline = time.monotonic() + timeout
    while True:
        response = airflow_stack.api.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        if response.status_code == 200 or time.monotonic() > deadline:
            response.raise_for_status()
            return
        time.sleep(2)


@pytest.fixture(scope="module")
def first_run(airflow_stack: Stack):
    # fruits_classifier is scheduled on the pipeline's PCA Asset: unpaused, the scheduler starts it
    # after the run commits (test_a_committed_run_triggers_the_classifier_through_its_asset).
    unpause(airflow_stack, "fruits_classifier")
    started = time.monotonic()
    run_id = airflow_stack.trigger()
    state = airflow_stack.wait(run_id)
    return run_id, state, time.monotonic() - started


def test_every_component_runs_as_its_own_process(airflow_stack: Stack):
    health = httpx.get(f"{airflow_stack.url}/api/v2/monitor/health", timeout=10).json()
    assert {health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}
    procs = airflow_stack.stack.procs
    assert set(procs) == set(COMPONENTS) and len({p.pid for p in procs.values()}) == len(COMPONENTS)
    assert all(p.poll() is None for p in procs.values())
    assert airflow_stack.stack.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    dag = airflow_stack.api.get("/api/v2/dags/fruits_pipeline")
    assert dag["is_paused"] is False


def test_a_run_triggered_through_the_rest_api_succeeds(airflow_stack: Stack, first_run):
    run_id, state, seconds = first_run
    tasks = airflow_stack.tasks(run_id)
    assert state == "success", (tasks, airflow_stack.stack.tail("scheduler"))
    assert set(tasks.values()) == {"success"}, tasks
    assert any(t.startswith("local_spark.") for t in tasks)
    run = airflow_stack.api.get(f"/api/v2/dags/fruits_pipeline/dagRuns/{run_id}")
    assert run["conf"]["image_size"] == 32 and run["run_type"] == "manual"
    # Ran by the scheduler's executor (queued), not in-process like dag.test().
    tis = airflow_stack.api.get(f"/api/v2/dags/fruits_pipeline/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert all(ti["queued_when"] and ti["pid"] for ti in tis), tis[0]
    print(f"first run: {seconds:.0f}s")

    report = airflow_stack.json(f"reports/{run_id.replace(':', '_').replace('+', '_')}.json")
    assert report["run_id"] == run_id and report["status"] == "success"
    assert report["images_sensed"] == report["features_rows"] == SAMPLES[0] * SAMPLES[1]
    assert report["image_size"] == 32 and report["weights"] == "none"
    for name in ("scree", "scatter"):
        key = report["outputs"][name].split(f"s3://{BUCKET}/", 1)[1]
        assert key in airflow_stack.keys(key)
    assert len(airflow_stack.json("state/ledger.json")["batches"]) == 1


@pytest.fixture(scope="module")
def classifier_run(airflow_stack: Stack, first_run) -> tuple[dict, str]:
    """The fruits_classifier run the scheduler starts from the first run's Asset event, ended."""
    deadline = time.monotonic() + 120
    while not (runs := airflow_stack.api.get("/api/v2/dags/fruits_classifier/dagRuns")["dag_runs"]):
        assert time.monotonic() < deadline, "no fruits_classifier run after the pipeline's commit"
        time.sleep(2)
    [run] = runs
    return run, airflow_stack.api.wait_run("fruits_classifier", run["dag_run_id"], timeout=420)


def test_a_committed_run_triggers_the_classifier_through_its_asset(airflow_stack: Stack, first_run, classifier_run):
    run_id, state, _ = first_run
    classifier, final = classifier_run
    assert state == "success" and classifier["run_type"] == "asset_triggered"
    tasks = airflow_stack.api.task_states("fruits_classifier", classifier["dag_run_id"])
    assert final == "success", (tasks, airflow_stack.stack.tail("scheduler"))
    # It trained on the run the Asset event named, and its outputs are in the bucket.
    safe = classifier["dag_run_id"].replace(":", "_").replace("+", "_")
    metrics = airflow_stack.json(f"classifier/run={safe}/metrics.json")
    assert metrics["pca_run"] == run_id
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_rows"] > 0


def test_a_run_with_nothing_new_is_skipped_after_its_sensor_timeout(airflow_stack: Stack, first_run):
    ledger = airflow_stack.json("state/ledger.json")
    started = time.monotonic()
    run_id = airflow_stack.trigger(sensor_timeout=SENSOR_TIMEOUT)
    seen: set[str] = set()
    state = airflow_stack.wait(run_id, timeout=SENSOR_TIMEOUT + 120, seen=seen)
    elapsed = time.monotonic() - started
    tasks = airflow_stack.tasks(run_id)
    assert state == "success" and set(tasks.values()) == {"skipped"}, tasks
    assert "up_for_reschedule" in seen, seen  # reschedule mode: the sensor gave its slot back between pokes
    assert SENSOR_TIMEOUT <= elapsed < SENSOR_TIMEOUT + 90, elapsed
    assert airflow_stack.json("state/ledger.json") == ledger


# ------------------------------------------------------------------------------ the Fruits view


@pytest.fixture(scope="module")
def run_report(airflow_stack: Stack, first_run):
    run_id, state, _ = first_run
    assert state == "success"
    return run_id


def _paths(run_id: str) -> list[str]:
    encoded = quote(run_id, safe="")
    return [
        "/fruits/",
        "/fruits/api/runs",
        f"/fruits/api/runs/{encoded}",
        f"/fruits/runs/{encoded}",
        f"/fruits/runs/{encoded}/plots/scatter",
    ]


def test_the_fruits_view_refuses_requests_without_valid_credentials(airflow_stack: Stack, run_report):
    forged = airflow_stack.api.token()[:-6] + "AAAAAA"
    for path in _paths(run_report):
        url = airflow_stack.url + path
        assert httpx.get(url).status_code == 401, path
        assert httpx.get(url, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403, path
        assert httpx.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 403, path
        assert httpx.get(url, cookies={"_token": forged}).status_code == 403, path


def test_the_fruits_view_serves_reports_and_plots_to_a_signed_in_user(airflow_stack: Stack, run_report):
    token = airflow_stack.api.token()
    bearer = {"Authorization": f"Bearer {token}"}
    for path in _paths(run_report):  # the API token, and the UI's session cookie
        assert httpx.get(airflow_stack.url + path, headers=bearer).status_code == 200, path
        assert httpx.get(airflow_stack.url + path, cookies={"_token": token}).status_code == 200, path
    runs = httpx.get(f"{airflow_stack.url}/fruits/api/runs", headers=bearer).json()
    assert runs["bucket"] == BUCKET and run_report in [r["run_id"] for r in runs["runs"]]
    encoded = quote(run_report, safe="")
    page = httpx.get(f"{airflow_stack.url}/fruits/runs/{encoded}", headers=bearer).text
    assert "id='scatter'" in page and "id='scree'" in page and f"s3://{BUCKET}/pca/run=" in page
    png = httpx.get(f"{airflow_stack.url}/fruits/runs/{encoded}/plots/scatter", headers=bearer)
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    index = httpx.get(f"{airflow_stack.url}/fruits/", headers=bearer).text
    assert run_report in index


@pytest.mark.parametrize(
    "path",
    [
        "/fruits/runs/no-such-run",
        "/fruits/api/runs/no-such-run",
        "/fruits/runs/..%2Fstate%2Fledger",
        "/fruits/runs/%2E%2E%2Fstate%2Fledger/plots/scatter",
        "/fruits/api/runs/state%2Fledger.json",
        "/fruits/runs/RUN/plots/ledger",
        "/fruits/runs/RUN/plots/..%2F..%2Fstate%2Fledger.json",
        "/fruits/runs/RUN/plots/scatter.png",
        "/fruits/reports/RUN.json",
    ],
)
def test_the_fruits_view_serves_nothing_but_reports_and_plots(airflow_stack: Stack, run_report, path):
    bearer = {"Authorization": f"Bearer {airflow_stack.api.token()}"}
    response = httpx.get(airflow_stack.url + path.replace("RUN", quote(run_report, safe="")), headers=bearer)
    assert response.status_code == 404, (path, response.status_code, response.text[:300])


def test_the_fruits_view_shows_the_classifier_of_a_run(airflow_stack: Stack, run_report, classifier_run):
    assert classifier_run[1] == "success"
    bearer = {"Authorization": f"Bearer {airflow_stack.api.token()}"}
    response = httpx.get(
        f"{airflow_stack.url}/fruits/runs/{quote(run_report, safe='')}/plots/confusion_matrix", headers=bearer
    )
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG"), response.status_code


def test_the_ui_lists_the_fruits_view(airflow_stack: Stack):
    plugins = airflow_stack.api.get("/api/v2/plugins")["plugins"]
    [plugin] = [p for p in plugins if p["name"] == "fruits_view"]
    assert [v["url_route"] for v in plugin["external_views"]] == ["fruits"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/fruits"]
