"""The "Fruits" view: recent fruits_pipeline runs from their S3 run reports, in the Airflow UI.

A FastAPI app mounted by the API server under /fruits (`fastapi_apps`) and a navigation entry
that shows it inside the UI (`external_views`, Airflow 3.1+). Every endpoint requires a valid
Airflow session cookie or API token (the app lives in the fruits_view package beside this file,
which .airflowignore keeps away from the plugin manager).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fruits_view import URL_PREFIX, create_app


class FruitsViewPlugin(AirflowPlugin):
    name = "fruits_view"
    fastapi_apps = [{"name": "fruits_view", "app": create_app(), "url_prefix": URL_PREFIX}]
    external_views = [
        {
            "name": "Fruits",
            "href": URL_PREFIX.lstrip("/") + "/",  # relative to the UI's base URL
            "url_route": "fruits",  # shown in an iframe at /plugin/fruits
            "destination": "nav",
            "category": "browse",
        }
    ]
