"""Who may import the Spark side, checked on every module's source (`ast`, nothing is imported).

The rule: `fruits_spark` (spark_jobs/fruits_spark/) is the lower layer. It, and the jobs in
spark_jobs/, import neither `fruits` nor Airflow: they run on nodes that have neither. On the
orchestration side only four modules import `fruits_spark`, each for a definition the jobs own:

* fruits.contract: what the jobs accept and leave (fruits_spark.interface);
* fruits.core.manifest: the manifest format (fruits_spark.manifest);
* fruits.core.keys: the label rule (fruits_spark.paths.label_of);
* fruits.core.pca_policy: the local backend's refit decision, taken with pca.py's own code
  (fruits_spark.pca_state, moments, pca_model) and default angle (fruits_spark.interface).

Every other module of fruits/, dags/ and plugins/ reaches these definitions through those four.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

ALLOWED = {"fruits/contract.py", "fruits/core/manifest.py", "fruits/core/keys.py", "fruits/core/pca_policy.py"}
ORCHESTRATION = ("fruits", "dags", "plugins")
SPARK = ROOT / "spark_jobs"


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports anywhere (also inside functions); relative imports left out."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(*folders: str | Path) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_only_the_allowed_orchestration_modules_import_the_spark_side():
    importing = {
        p.relative_to(ROOT).as_posix() for p in modules(*ORCHESTRATION) if "fruits_spark" in imported_packages(p)
    }
    assert importing - ALLOWED == set(), "import these definitions through " + ", ".join(sorted(ALLOWED))
    assert importing == ALLOWED  # no stale entry: each allowed module still needs the Spark side


def test_the_spark_side_imports_neither_fruits_nor_airflow():
    found = modules(SPARK)
    assert SPARK / "featurize.py" in found and SPARK / "fruits_spark" / "manifest.py" in found
    offending = {
        p.relative_to(ROOT).as_posix(): sorted(imported_packages(p) & {"fruits", "fruits_dev", "airflow"})
        for p in found
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from fruits_spark import pca_state\n    import airflow.sdk\nfrom . import sibling\n",
        encoding="utf-8",
    )
    assert imported_packages(module) == {"fruits_spark", "airflow"}
