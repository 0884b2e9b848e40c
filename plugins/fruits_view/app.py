"""The Fruits view: FastAPI routes, authentication, HTML.

    GET /fruits/                          recent runs (HTML)
    GET /fruits/runs/{run_id}             one run: report, scree plot, PCA scatter, outputs (HTML)
    GET /fruits/runs/{run_id}/plots/{name}  scree | scatter | confusion_matrix (PNG)
    GET /fruits/api/runs                  recent run reports (JSON)
    GET /fruits/api/runs/{run_id}         one report (+ classifier metrics when present) (JSON)

Airflow does not protect plugin apps: every route depends on `require_user`, which validates the
request's credentials exactly as the API server's own routes do (airflow.api_fastapi.core_api.
security.get_user: a Bearer token, else the UI's `_token` session cookie; JWT signature, expiry,
audience, revocation) and then asks the auth manager whether that user may read fruits_pipeline's
runs. No credentials: 401; an invalid token or a user without access: 403.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from fruits_view.reports import NotFound, Reports

DAG_ID = "fruits_pipeline"


async def require_user(request: Request):
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)  # raises 401 / 403 like the API server
    if not get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=DAG_ID), user=user
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
    return user


@lru_cache(maxsize=1)
def reports() -> Reports:
    """One S3 client per API server worker (boto3 clients are thread-safe)."""
    return Reports.from_settings()


def _not_found(exc: NotFound) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))


def create_app() -> FastAPI:
    app = FastAPI(
        title="Fruits view", dependencies=[Depends(require_user)], docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.get("/", response_class=HTMLResponse)
    def index(store: Reports = Depends(reports)):
        return HTMLResponse(render_index(store.recent(), store.name), headers=NO_STORE)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str, store: Reports = Depends(reports)):
        try:
            report = store.report(run_id)
        except NotFound as exc:
            raise _not_found(exc) from None
        return HTMLResponse(render_run(report, store.classifier(run_id)), headers=NO_STORE)

    @app.get("/runs/{run_id}/plots/{name}")
    def plot(run_id: str, name: str, store: Reports = Depends(reports)):
        try:
            data = store.plot(run_id, name)
        except NotFound as exc:
            raise _not_found(exc) from None
        return Response(data, media_type="image/png", headers=NO_STORE)

    @app.get("/api/runs")
    def api_runs(store: Reports = Depends(reports)):
        return JSONResponse({"bucket": store.name, "runs": store.recent()}, headers=NO_STORE)

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str, store: Reports = Depends(reports)):
        try:
            report = store.report(run_id)
        except NotFound as exc:
            raise _not_found(exc) from None
        return JSONResponse({"report": report, "classifier": store.classifier(run_id)}, headers=NO_STORE)

    return app


# ---------------------------------------------------------------------------------------- HTML

NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a202c; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #e2e8f0; padding: .3rem .7rem; text-align: left; font-size: .9rem; }
th { background: #f7fafc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plots figure { margin: 0; }
.plots img { width: 520px; max-width: 100%; height: auto; border: 1px solid #e2e8f0; }
code { font-size: .85rem; }
.muted { color: #718096; }
"""


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def run_href(run_id: str, prefix: str) -> str:
    return prefix + quote(run_id, safe="")


def _fmt_share(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "–"


def render_index(runs: list[dict], bucket: str) -> str:
    rows = []
    for r in runs:
        reasons = ", ".join(
            f"{escape(str(k))}: {escape(str(v))}" for k, v in sorted((r.get("reject_reasons") or {}).items())
        )
        rows.append(
            f"<tr><td><a href='{escape(run_href(r['run_id'], './runs/'))}'>{escape(r['run_id'])}</a></td>"
            f"<td>{escape(str(r.get('finished_at', '')))}</td><td>{escape(str(r.get('status', '')))}</td>"
            f"<td>{escape(str(r.get('compute', '')))}</td>"
            f"<td class='num'>{escape(str(r.get('images_sensed', '')))}</td>"
            f"<td class='num'>{escape(str(r.get('features_rows', '')))}</td>"
            f"<td class='num' title='{reasons}'>{escape(str(r.get('rejects_rows', '')))}</td>"
            f"<td class='num'>{escape(str(r.get('pca_k', '')))}</td>"
            f"<td class='num'>{_fmt_share(r.get('explained_variance_total'))}</td>"
            f"<td class='num'>{escape(str((r.get('stage_seconds') or {}).get('total', '')))}</td></tr>"
        )
    table = (
        (
            "<table id='runs'><tr><th>run</th><th>finished</th><th>status</th><th>compute</th><th>images sensed</th>"
            "<th>featurized</th><th>rejected</th><th>PCA k</th><th>explained variance</th><th>seconds</th></tr>"
            + "".join(rows)
            + "</table>"
        )
        if rows
        else "<p id='no-runs'>No run report yet: trigger <code>fruits_pipeline</code>.</p>"
    )
    return page(
        "Fruits",
        f"<h1>Fruits pipeline runs</h1><p class='muted'>Run reports in "
        f"<code>s3://{escape(bucket)}/reports/</code>, newest first.</p>{table}",
    )


def render_run(report: dict, classifier: dict | None) -> str:
    run_id = report["run_id"]
    plots_href = run_href(run_id, "./") + "/plots/"
    facts = [
        ("status", report.get("status")),
        ("compute", report.get("compute")),
        ("batch", report.get("batch_id")),
        ("finished", report.get("finished_at")),
        ("weights", report.get("weights")),
        ("image size", report.get("image_size")),
        ("images sensed", report.get("images_sensed")),
        ("featurized", report.get("features_rows")),
        ("rejected", report.get("rejects_rows")),
        ("features in total", report.get("features_total")),
        ("PCA rows", report.get("pca_rows")),
        ("PCA k", report.get("pca_k")),
        ("explained variance", _fmt_share(report.get("explained_variance_total"))),
    ]
    facts += [(f"rejected: {reason}", count) for reason, count in sorted((report.get("reject_reasons") or {}).items())]
    facts += [("rejected at planning", report.get("planning_rejects")), ("re-landings", report.get("relandings"))]
    facts += [
        (f"at planning: {reason}", count)
        for reason, count in sorted((report.get("planning_reject_reasons") or {}).items())
    ]
    facts += [(f"ignored: {reason}", count) for reason, count in sorted((report.get("ignored") or {}).items())]
    if report.get("status") != "success":  # a failed or timed-out run: what failed, why, what it committed
        facts += [
            ("reason", report.get("reason")),
            ("failed task", report.get("failed_task")),
            ("error", report.get("error")),
            ("committed", report.get("committed")),
        ]
    facts = [(k, v) for k, v in facts if v is not None]
    facts_html = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    stages = "".join(
        f"<tr><td>{escape(str(k))}</td><td class='num'>{escape(str(v))}</td></tr>"
        for k, v in (report.get("stage_seconds") or {}).items()
    )
    outputs = "".join(
        f"<tr><th>{escape(str(k))}</th><td><code>{escape(str(v))}</code></td></tr>"
        for k, v in (report.get("outputs") or {}).items()
    )
    plots = "".join(
        f"<figure><img id='{name}' src='{escape(plots_href + name)}' alt='{label}'>"
        f"<figcaption>{label}</figcaption></figure>"
        for name, label in (("scree", "scree plot"), ("scatter", "PCA scatter (first two components)"))
        if (report.get("outputs") or {}).get(name)
    )
    body = (
        f"<p><a href='../'>&larr; all runs</a></p><h1>Run <code>{escape(run_id)}</code></h1>"
        f"<div class='plots'>{plots}</div>"
        f"<h2>Report</h2><table id='report'>{facts_html}</table>"
        f"<h2>Seconds per stage</h2><table id='stages'>{stages}</table>"
        f"<h2>Outputs</h2><table id='outputs'>{outputs}</table>"
    )
    if classifier:
        m = classifier["metrics"]
        rows = [
            ("accuracy", _fmt_share(m.get("accuracy"))),
            ("majority baseline", _fmt_share(m.get("majority_baseline"))),
            ("macro F1", m.get("macro_f1")),
            ("test images", m.get("test_rows")),
            ("outputs", classifier["uri"]),
        ]
        image = (
            f"<figure><img id='confusion_matrix' src='{escape(plots_href)}confusion_matrix' "
            f"alt='confusion matrix'><figcaption>confusion matrix</figcaption></figure>"
            if classifier.get("confusion_matrix")
            else ""
        )
        body += (
            "<h2>Classifier</h2><div class='plots'><table id='classifier'>"
            + "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
            + f"</table>{image}</div>"
        )
    return page(f"Fruits run {run_id}", body)
