"""EMR's stack on this machine: the Python environment a cluster node gets, with EMR's Spark.

    python -m fruits_dev.emr_stack build       # `make emr-stack`
    python -m fruits_dev.emr_stack where       # prints the environment's folder

A node of the cluster runs the jobs with Spark 3.5 (EMR 7) and the Python packages bootstrap.sh
installs from spark_jobs/emr/requirements-emr.txt (numpy 1.26, pandas 2.2, pyarrow 17: not the
project's own venv). This builds that environment in a second virtualenv: Python 3.11, the
requirements installed with bootstrap.sh's own pip command from the wheelhouse the DAG uploads
for x86_64 nodes (`make emr-wheelhouse`; hash-checked, no index, nothing resolved), plus
the pyspark of the default release label's Spark (fruits.settings.EMR_SPARK_VERSION; on a node
it is EMR's own) and its S3A jars. The local EMR (fruits_dev/local_emr.py) runs every step on it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fruits.backends.emr import wheelhouse as node_wheels
from fruits.settings import EMR_SPARK_VERSION, PROJECT_ROOT
from fruits_dev import wheelhouse
from fruits_dev.wheelhouse import REQUIREMENTS

PYTHON_VERSION = ".".join(map(str, node_wheels.PYTHON_VERSION))  # bootstrap.sh's python3.11
STAMP = ".fruits-emr-stack"
NODE_ARCH = "x86_64"  # the default instance types' (m5.xlarge) and this machine's


@dataclass(frozen=True)
class EmrStack:
    """A built EMR stack: its interpreter, spark-submit and Spark version."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def spark_home(self) -> Path:
        return self.root / "lib" / f"python{PYTHON_VERSION}" / "site-packages" / "pyspark"

    @property
    def spark_submit(self) -> Path:
        return self.spark_home / "bin" / "spark-submit"

    spark_version = EMR_SPARK_VERSION


class EmrStackMissing(RuntimeError):
    """The EMR stack was not built (or not for today's requirements)."""


def default_root() -> Path:
    configured = os.environ.get("FRUITS_EMR_STACK", "").strip()
    return Path(configured).expanduser() if configured else PROJECT_ROOT / ".venv-emr"


def fingerprint() -> str:
    """What the stack is built from: a changed requirement or Spark pin means a rebuild."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"pyspark=={EMR_SPARK_VERSION} python{PYTHON_VERSION}".encode())
    return digest.hexdigest()[:16]


def locate(root: Path | None = None) -> EmrStack:
    """The built stack (EmrStackMissing, with the command to build it, otherwise)."""
    stack = EmrStack(root or default_root())
    stamp = stack.root / STAMP
    if not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != fingerprint():
        raise EmrStackMissing(
            f"EMR's stack is not built in {stack.root} for today's requirements: run `make emr-stack`"
        )
    return stack


def base_python() -> str:
    for candidate in (os.environ.get("FRUITS_EMR_BASE_PYTHON"), f"python{PYTHON_VERSION}"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise SystemExit(f"python{PYTHON_VERSION} is needed for EMR's stack (bootstrap.sh installs it on every node)")


def pip_install_requirements(python: Path, requirements: Path, wheels: Path) -> list[str]:
    """bootstrap.sh's install command: every wheel from the wheelhouse, pinned and hash-checked,
    no index, nothing resolved."""
    return [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-index",
        "--find-links",
        str(wheels),
        "--require-hashes",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-r",
        str(requirements),
    ]


def build(root: Path | None = None) -> EmrStack:
    from fruits_dev import spark_jars

    stack = EmrStack(root or default_root())
    try:
        locate(stack.root)
        print(f"EMR stack up to date in {stack.root}")
    except EmrStackMissing:
        if stack.root.exists():
            shutil.rmtree(stack.root)
        print(
            f"building EMR's stack in {stack.root} (Python {PYTHON_VERSION}, pyspark {EMR_SPARK_VERSION})", flush=True
        )
        wheels = wheelhouse.build(REQUIREMENTS, architectures=(NODE_ARCH,))[NODE_ARCH]
        subprocess.run([base_python(), "-m", "venv", str(stack.root)], check=True)
        subprocess.run(pip_install_requirements(stack.python, REQUIREMENTS, wheels), check=True)
        # On a node PySpark is EMR's own; here the PyPI release of the same Spark version plays it.
        subprocess.run(
            [
                str(stack.python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"pyspark=={EMR_SPARK_VERSION}",
            ],
            check=True,
        )
        (stack.root / STAMP).write_text(fingerprint() + "\n", encoding="utf-8")
    spark_jars.install(str(stack.python))
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "where"))
    parser.add_argument("--root", type=Path, help="the environment's folder (default .venv-emr, or FRUITS_EMR_STACK)")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.root)
    else:
        print(locate(args.root).root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
