"""Every FRUITS_* setting of the pipeline is read in one place, fruits/settings.py, with its default
and its check: no module of the DAGs' side reads the environment for one behind its back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fruits import settings as settings_mod
from fruits import spark_s3a
from fruits.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("fruits", "dags", "plugins")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_environ(node: ast.AST) -> bool:
    return _dotted(node) in ("os.environ", "environ")


def env_reads(source: str) -> set[str]:
    """The FRUITS_* names a module reads from the environment: os.environ.get/[]/setdefault/pop,
    `in os.environ`, os.getenv, by literal, f-string prefix or module-level constant."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def name_of(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        if isinstance(node, ast.JoinedStr) and node.values:
            return name_of(node.values[0])
        return None

    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and _is_environ(func.value)
                and func.attr in ("get", "setdefault", "pop")
            ) or _dotted(func) in ("os.getenv", "getenv"):
                keys.append(node.args[0] if node.args else None)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            keys.append(node.left)
    return {name for name in map(name_of, keys) if name and name.startswith("FRUITS_")}


def fruits_env_reads() -> set[tuple[str, str]]:
    found = set()
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            if relative != "fruits/settings.py":
                found |= {(relative, name) for name in env_reads(path.read_text(encoding="utf-8"))}
    return found


def test_no_module_but_settings_reads_a_fruits_variable():
    found = fruits_env_reads()
    assert found == set(), "read these in fruits/settings.py's Settings instead"


@pytest.mark.parametrize(
    "source",
    [
        'import os\nos.environ.get("FRUITS_X", "1")',
        'import os\nos.environ["FRUITS_X"]',
        'import os\nos.getenv("FRUITS_X")',
        'from os import environ\nenviron.get("FRUITS_X")',
        'import os\nif "FRUITS_X" in os.environ: pass',
        'import os\nos.environ.setdefault("FRUITS_X", "1")',
        'import os\nSETTING = "FRUITS_X"\nos.environ.get(SETTING)',
        'import os\nos.environ.get(f"FRUITS_X{1}")',
    ],
)
def test_the_scan_finds_every_way_of_reading_the_environment(source):
    assert env_reads(source) == {"FRUITS_X"}


def test_the_scan_ignores_other_variables_and_mere_mentions():
    assert (
        env_reads(
            'import os\nos.environ.get("PYSPARK_PYTHON")\nNAME = "FRUITS_RUN_TIMEOUT"\n'
            'print(f"raise FRUITS_RUN_TIMEOUT")'
        )
        == set()
    )
    # settings.py itself reads them (through its _env helpers, named by literal)
    assert {"FRUITS_SPARK_DRIVER_MEMORY", "FRUITS_CLASSIFIER_RUN_TIMEOUT", "FRUITS_SPARK_JARS_CACHE"} <= {
        node.value
        for node in ast.walk(ast.parse((ROOT / "fruits/settings.py").read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_the_local_spark_driver_memory_is_a_setting(monkeypatch):
    monkeypatch.delenv("FRUITS_SPARK_DRIVER_MEMORY", raising=False)
    assert Settings().spark_driver_memory == "4g"
    monkeypatch.setenv("FRUITS_SPARK_DRIVER_MEMORY", "2048m")
    assert Settings().spark_driver_memory == "2048m"
    for bad in ("4 GB", "lots", "-1g", "4gib"):
        monkeypatch.setenv("FRUITS_SPARK_DRIVER_MEMORY", bad)
        with pytest.raises(ValueError, match="FRUITS_SPARK_DRIVER_MEMORY must be a JVM memory size"):
            Settings()


def test_the_classifier_run_timeout_is_a_setting_with_the_pipelines_floor(monkeypatch):
    monkeypatch.delenv("FRUITS_CLASSIFIER_RUN_TIMEOUT", raising=False)
    assert Settings().classifier_run_timeout == 6 * 3600
    monkeypatch.setenv("FRUITS_CLASSIFIER_RUN_TIMEOUT", "7200")
    assert Settings().classifier_run_timeout == 7200
    monkeypatch.setenv("FRUITS_CLASSIFIER_RUN_TIMEOUT", "600")
    with pytest.raises(ValueError, match="FRUITS_CLASSIFIER_RUN_TIMEOUT must be at least 3600 seconds"):
        Settings()


def test_the_s3a_jars_cache_is_a_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("FRUITS_SPARK_JARS_CACHE", raising=False)
    assert Settings().spark_jars_cache == spark_s3a.cache_dir() == Path.home() / ".cache" / "fruits-pipeline" / "ivy"
    monkeypatch.setenv("FRUITS_SPARK_JARS_CACHE", str(tmp_path / "ivy"))
    assert Settings().spark_jars_cache == spark_s3a.cache_dir() == tmp_path / "ivy"
    assert settings_mod.spark_jars_cache_dir() == tmp_path / "ivy"
