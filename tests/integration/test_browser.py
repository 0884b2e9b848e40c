"""A person's path through the UI, in a real browser: sign in, open fruits_pipeline, trigger it from
the trigger form with a Param changed, wait for the run to turn green, open the Fruits view and
see the run's PCA scatter loaded. Playwright drives Debian's Chromium (/usr/bin/chromium; `.ci/run`
installs it); screenshots go to .cache/test-artifacts/browser/ (git-ignored).

Without Chromium the test skips, except in CI (CI=true), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from airflow_stack_support import BUCKET, Stack, airflow_stack  # noqa: F401 - the fixture

from conftest import ROOT
from fruits_dev import s3_server
from fruits_dev.airflow_stack import DAG_ID, USER
from fruits_dev.samples import generate_samples

pytestmark = pytest.mark.spark

ARTIFACTS = ROOT / ".cache" / "test-artifacts" / "browser"
PCA_K = 2  # the Param changed in the trigger form (empty by default: pca_variance decides)


def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is not installed (make venv)"
    if not found:
        problem = "no Chromium: apt-get install -y chromium (Playwright's own browser download is not used)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; CI must run the browser test")
        pytest.skip(problem)
    return found


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def _evaluate(locator, expression):
    from playwright.sync_api import Error

    try:
        return locator.evaluate(expression, timeout=5_000)
    except Error:
        return False


def latest_run(stack: Stack) -> dict | None:
    runs = stack.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"order_by": "-run_after", "limit": 1})["dag_runs"]
    return runs[0] if runs else None


def test_trigger_from_the_ui_and_see_the_run_in_the_fruits_view(airflow_stack: Stack, browser, tmp_path):
    # New images, so that the run has a batch to process whatever ran before.
    root = tmp_path / "samples"
    generate_samples(root, n_classes=2, per_class=3, start_index=900, seed=9)
    s3_server.upload_tree(airflow_stack.s3, BUCKET, root, "landing/")
    before = latest_run(airflow_stack)

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    url = airflow_stack.url
    try:
        page.goto(url + "/")
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill(airflow_stack.stack.config.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(url + "/")
        assert "_token" in {c["name"] for c in context.cookies()}

        page.goto(f"{url}/dags/{DAG_ID}")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.locator("[role=dialog][data-state=open]")
        dialog.locator("[name=element_pca_k]").fill(str(PCA_K))
        dialog.locator("[name=element_sensor_timeout]").fill("60")
        page.screenshot(path=str(ARTIFACTS / "1-trigger-form.png"))
        dialog.get_by_role("button", name="Trigger", exact=True).click()

        deadline = time.monotonic() + 30
        run = latest_run(airflow_stack)
        while run is None or (before and run["dag_run_id"] == before["dag_run_id"]):
            assert time.monotonic() < deadline, "the trigger form created no run"
            time.sleep(0.5)
            run = latest_run(airflow_stack)
        run_id = run["dag_run_id"]
        assert run["conf"]["pca_k"] == PCA_K and run["conf"]["sensor_timeout"] == 60, run["conf"]

        state = airflow_stack.wait(run_id)
        assert state == "success", airflow_stack.tasks(run_id)
        page.goto(f"{url}/dags/{DAG_ID}/runs/{run_id}")
        page.get_by_text("success", exact=False).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "2-run-success.png"))

        page.goto(f"{url}/plugin/fruits")
        frame = page.frame_locator("iframe")
        frame.get_by_role("link", name=run_id).click()
        # Both plots loaded, decoded and laid out; polled through the frame locator, which finds the
        # iframe again if the UI re-renders it.
        loaded = (
            "body => ['scatter', 'scree'].every(id => { const img = document.getElementById(id);"
            " return img && img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().height > 100; })"
        )
        deadline = time.monotonic() + 60
        while not _evaluate(frame.locator("body"), loaded):
            assert time.monotonic() < deadline, "the plots did not load in the Fruits view"
            time.sleep(0.5)
        assert frame.locator("img#scatter").evaluate("img => img.naturalWidth") > 0
        report = frame.locator("table#report").inner_text()
        assert "PCA k" in report and f"\t{PCA_K}" in report.replace("  ", "\t"), report
        page.screenshot(path=str(ARTIFACTS / "3-fruits-view.png"))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
        raise
    finally:
        context.close()
