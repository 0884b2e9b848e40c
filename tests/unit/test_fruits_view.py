"""The Fruits view's S3 side (plugins/fruits_view/reports.py) on moto's in-process mock behind a real
S3Hook: which runs it lists, and that a request can reach nothing but reports and their plots.
(The routes and their authentication run against a real API server in
tests/integration/test_airflow_stack.py.)"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import ROOT
from fruits.layout import report_key, safe_run_id

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
RUN = "manual__2026-11-30T12:00:00.123456+00:00"
SAFE = "manual__2026-11-30T12_00_00.123456_00_00"


def load_view_package():
    """plugins/fruits_view as the package `fruits_view` (the API server finds it on the plugins folder)."""
    if "fruits_view" not in sys.modules:
        folder = ROOT / "plugins" / "fruits_view"
        spec = importlib.util.spec_from_file_location(
            "fruits_view", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["fruits_view"] = module
        spec.loader.exec_module(module)
    import fruits_view.reports

    return fruits_view.reports


reports_mod = load_view_package()


def put_report(bucket, run_id: str, **extra) -> dict:
    safe = safe_run_id(run_id)
    report = {
        "run_id": run_id,
        "status": "success",
        "pca_k": 3,
        "explained_variance_total": 0.97,
        "outputs": {
            "scree": f"s3://{bucket.name}/pca/run={safe}/report_scree.png",
            "scatter": f"s3://{bucket.name}/pca/run={safe}/report_scatter.png",
            "pca": f"s3://{bucket.name}/pca/run={safe}/",
        },
        **extra,
    }
    bucket.write_json(f"reports/{safe}.json", report)
    bucket.write_bytes(f"pca/run={safe}/report_scree.png", PNG)
    bucket.write_bytes(f"pca/run={safe}/report_scatter.png", PNG)
    return report


@pytest.fixture
def store(bucket):
    put_report(bucket, RUN)
    bucket.write_json("state/ledger.json", {"batches": []})
    return reports_mod.Reports(bucket)


def test_the_report_key_form_matches_the_pipeline_layout():
    assert safe_run_id(RUN) == SAFE
    assert report_key(RUN) == f"reports/{SAFE}.json"


def test_recent_runs_and_one_report(store, bucket):
    put_report(bucket, "manual__2026-11-30T13:00:00+00:00")
    bucket.write_text("reports/notes.txt", "not a report")
    runs = store.recent()
    assert {r["run_id"] for r in runs} == {RUN, "manual__2026-11-30T13:00:00+00:00"}
    assert store.report(RUN)["pca_k"] == 3
    assert store.plot(RUN, "scatter") == PNG and store.plot(RUN, "scree") == PNG


@pytest.mark.parametrize(
    "run_id",
    [
        "no-such-run",
        "../state/ledger",
        "state/ledger.json",
        "",
        "x" * 300,
        SAFE + "/../../state/ledger",
        "manual__2026-11-30T12:00:00.123456+00:00\n",
        "reports/" + SAFE,
    ],
)
def test_a_run_id_that_is_not_a_report_is_not_found(store, run_id):
    with pytest.raises(reports_mod.NotFound):
        store.report(run_id)
    with pytest.raises(reports_mod.NotFound):
        store.plot(run_id, "scatter")


def test_a_report_whose_run_id_differs_from_its_key_is_not_found(store, bucket):
    bucket.write_json("reports/other.json", {"run_id": "something-else", "outputs": {}})
    with pytest.raises(reports_mod.NotFound):
        store.report("other")


@pytest.mark.parametrize(
    "scatter",
    [
        "s3://fruits-unit/state/ledger.json",
        "s3://other-bucket/pca/run=x/report_scatter.png",
        f"s3://fruits-unit/pca/run={SAFE}/../../state/ledger.png",
        "s3://fruits-unit/pca/run=another-run/p.png",
        f"s3://fruits-unit/pca/run={SAFE}/vectors/part-0.parquet",
        "/etc/passwd",
        None,
    ],
)
def test_plots_are_confined_to_the_runs_own_png_outputs(bucket, scatter):
    put_report(bucket, RUN, outputs={"scatter": scatter})
    with pytest.raises(reports_mod.NotFound):
        reports_mod.Reports(bucket).plot(RUN, "scatter")


def test_only_the_known_plot_names_are_served(store):
    for name in ("ledger", "report", "../scatter", "model"):
        with pytest.raises(reports_mod.NotFound):
            store.plot(RUN, name)


def test_a_plot_that_is_not_a_png_is_not_served(store, bucket):
    bucket.write_text(f"pca/run={SAFE}/report_scatter.png", "<script>alert(1)</script>")
    with pytest.raises(reports_mod.NotFound):
        store.plot(RUN, "scatter")


def test_classifier_metrics_of_the_run_when_present(store, bucket):
    assert store.classifier(RUN) is None
    with pytest.raises(reports_mod.NotFound):
        store.plot(RUN, "confusion_matrix")
    bucket.write_json("classifier/run=c1/metrics.json", {"pca_run": "another", "accuracy": 0.1})
    bucket.write_json("classifier/run=c2/metrics.json", {"pca_run": RUN, "accuracy": 0.9, "majority_baseline": 0.4})
    bucket.write_bytes("classifier/run=c2/confusion_matrix.png", PNG)
    found = store.classifier(RUN)
    assert found["metrics"]["accuracy"] == 0.9 and found["uri"] == "s3://fruits-unit/classifier/run=c2/"
    assert store.plot(RUN, "confusion_matrix") == PNG


def test_pages_escape_what_they_show(store, bucket):
    import fruits_view.app as app

    report = put_report(bucket, "manual__x", reject_reasons={"<img src=x onerror=alert(1)>": 1})
    html = app.render_run(report, None) + app.render_index([report], "fruits-unit")
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert "href='./runs/manual__x'" in html and "src='./manual__x/plots/scatter'" in html


def test_a_failed_run_shows_what_failed_and_what_it_committed(store, bucket):
    import fruits_view.app as app

    from fruits.core import pipeline

    bucket.write_json("state/ledger.json", {"version": 2, "batches": [], "pca": None})
    failed = pipeline.publish_failure(
        bucket,
        run_id="manual__failed",
        failed_task="validate",
        error="validation failed: PCA rows (5) != 6",
        reason="task failed",
    )
    assert store.report("manual__failed")["status"] == "failed"
    html = app.render_run(failed, None)
    assert "<th>failed task</th><td>validate</td>" in html and "PCA rows (5) != 6" in html
    assert "<th>committed</th>" not in html  # nothing committed: the row is left out, not "None"
    assert "manual__failed" in app.render_index(store.recent(), bucket.name)
