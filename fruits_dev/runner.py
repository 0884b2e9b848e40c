"""Run `fruits_pipeline` once, outside a scheduler, and report how every task ended.

Used by `make demo` and the end-to-end tests. It prepares an Airflow home (SQLite metadata
DB, this repo's dags/ and plugins/), then runs `dag.test()` in a child process so that
each run starts from a clean interpreter, exactly as a scheduler-launched task would.

    python -m fruits_dev.runner --home DIR --conf '{"weights": "none"}'    # prints a JSON result
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from fruits.settings import DEFAULT_REGION, PROJECT_ROOT
from fruits_dev import spark_cds

DAG_ID = "fruits_pipeline"  # the default; fruits_classifier runs the same way
RESULT_MARKER = "FRUITS_RUN_RESULT "


def aws_connection(
    endpoint_url: str | None, region: str = DEFAULT_REGION, key: str = "testing", secret: str = "testing"
) -> str:
    extra = {"region_name": region}
    if endpoint_url:
        extra["endpoint_url"] = endpoint_url
    return json.dumps({"conn_type": "aws", "login": key, "password": secret, "extra": extra})


def airflow_env(home: Path, *, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an isolated Airflow home that sees this repository's DAG and plugins."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
            "AIRFLOW_CONN_SPARK_DEFAULT": env.get(
                "AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[*]"})
            ),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),  # spark-submit and airflow of this venv
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "FRUITS_SCHEDULE": "none",
        }
    )
    env.update(extra or {})
    return spark_cds.with_startup_options(env)  # the jobs' spark-submit start their JVM faster with it


def ensure_metadata_db(env: dict[str, str]) -> None:
    home = Path(env["AIRFLOW_HOME"])
    marker = home / ".db-migrated"
    if marker.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker.touch()


def run_once(
    env: dict[str, str], conf: dict, *, log_file: Path | None = None, echo: bool = False, dag_id: str = DAG_ID
) -> dict:
    """Run the DAG once in a child process; return {"state": ..., "tasks": {task_id: state}}."""
    ensure_metadata_db(env)
    command = [sys.executable, "-m", "fruits_dev.runner", "--child", "--dag-id", dag_id, "--conf", json.dumps(conf)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        lines = []
        log = open(log_file, "a", encoding="utf-8") if log_file else None
        try:
            for line in proc.stdout:
                lines.append(line)
                if log:
                    log.write(line)
                if echo:
                    sys.stdout.write(line)
        finally:
            if log:
                log.close()
    results = [line[len(RESULT_MARKER) :] for line in lines if line.startswith(RESULT_MARKER)]
    if not results:
        tail = "".join(lines[-80:])
        raise RuntimeError(f"the DAG run did not report a result (exit {proc.returncode}):\n{tail}")
    result = json.loads(results[-1])
    result["output"] = "".join(lines)
    return result


def _child(conf: dict, dag_id: str) -> None:
    import logging

    from airflow.dag_processing.dagbag import DagBag

    logging.getLogger("airflow.sdk").setLevel(logging.INFO)
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    run = dag.test(run_conf=conf)
    tasks = {
        ti.task_id: (ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in run.get_task_instances()
    }
    state = run.state.value if hasattr(run.state, "value") else str(run.state)
    print(RESULT_MARKER + json.dumps({"state": state, "run_id": run.run_id, "tasks": tasks}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", default="{}", help="run conf (JSON) overriding the DAG params")
    parser.add_argument("--home", type=Path, help="Airflow home (created if missing)")
    parser.add_argument("--dag-id", default=DAG_ID, help=f"the DAG to run (default {DAG_ID})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.conf), args.dag_id)
        return 0
    if not args.home:
        parser.error("--home is required")
    result = run_once(airflow_env(args.home), json.loads(args.conf), echo=True, dag_id=args.dag_id)
    print(json.dumps({k: v for k, v in result.items() if k != "output"}, indent=2))
    return 0 if result["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
