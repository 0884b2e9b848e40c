"""The Fruits view's FastAPI app (plugins/fruits_view_plugin.py mounts it). Not a plugin entry
point: plugins/.airflowignore keeps the plugin manager from importing these files on their own."""

from __future__ import annotations

URL_PREFIX = "/fruits"


def create_app():
    from fruits_view.app import create_app as create

    return create()
