"""plugins/ holds real Airflow plugins only: the plugin manager, which imports every .py file there
into the scheduler, the dag-processor and the API server, finds no pipeline code and no dev tooling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

PLUGINS = ROOT / "plugins"


def airflow_env(tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


def test_the_plugin_manager_imports_no_pipeline_or_dev_module(tmp_path):
    code = """
import json, sys
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
plugins, errors = plugins_manager._get_plugins()
print(json.dumps({
    "sources": [str(getattr(p, "source", "")) for p in plugins],
    "errors": {str(k): str(v) for k, v in errors.items()},
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                      ("fruits_dev", "samples", "demo", "runner", "s3_server", "spark_cds", "settings", "pipeline")),
}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=airflow_env(tmp_path),
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["errors"] == {}
    assert loaded["modules"] == []  # no dev tooling, no module imported a second time under a bare name
    assert not [s for s in loaded["sources"] if "fruits/" in s or "fruits_dev" in s]


def test_airflow_plugins_lists_no_pipeline_code(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "plugins", "-o", "json"],
        capture_output=True,
        text=True,
        env=airflow_env(tmp_path),
        timeout=180,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fruits_dev" not in out.stdout and "fruits/core" not in out.stdout and "fruits/backends" not in out.stdout


def test_every_python_file_in_plugins_defines_an_airflow_plugin():
    ignored = [
        line
        for line in (PLUGINS / ".airflowignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignored, "plugins/.airflowignore keeps tests and helpers out of the plugin manager"
    import re

    for path in PLUGINS.rglob("*.py"):
        relative = path.relative_to(PLUGINS).as_posix()
        if any(re.search(pattern, relative) for pattern in ignored):
            continue
        assert "AirflowPlugin" in path.read_text(), f"{relative} is not an Airflow plugin"
