"""`make airflow`'s start-up guards and settings, without starting Airflow: a port in use and a stack
already running are clear messages; what a crashed stack left behind is cleaned up; every
process gets the same shared settings (tests/integration/test_airflow_stack.py runs the stack)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from fruits_dev import airflow_stack
from fruits_dev.airflow_stack import AirflowStack, StackConfig, StackError


def stack(tmp_path, **kwargs) -> AirflowStack:
    config = StackConfig(home=tmp_path, api_port=airflow_stack.free_port(), s3_port=airflow_stack.free_port(), **kwargs)
    return AirflowStack(config, echo=lambda message: None)


def test_defaults_and_environment(monkeypatch, tmp_path):
    for name in (
        "FRUITS_AIRFLOW_PORT",
        "FRUITS_S3_PORT",
        "FRUITS_AIRFLOW_PASSWORD",
        "FRUITS_AIRFLOW_DB_URL",
        "FRUITS_AIRFLOW_HOME",
        "FRUITS_S3_ENDPOINT",
        "FRUITS_BUCKET",
    ):
        monkeypatch.delenv(name, raising=False)
    config = StackConfig.from_environment()
    assert (config.api_port, config.s3_port, config.password, config.db_url) == (8080, 9000, "admin", None)
    assert config.home == airflow_stack.DEFAULT_HOME
    monkeypatch.setenv("FRUITS_AIRFLOW_PORT", "8081")
    monkeypatch.setenv("FRUITS_AIRFLOW_DB_URL", "postgresql+psycopg2://u:p@localhost/airflow")
    config = StackConfig.from_environment()
    assert config.api_port == 8081 and config.db_url.startswith("postgresql")
    monkeypatch.setenv("FRUITS_S3_PORT", "nine")
    with pytest.raises(StackError, match="FRUITS_S3_PORT must be a TCP port"):
        StackConfig.from_environment()


def test_the_default_folder_is_git_ignored():
    root = airflow_stack.PROJECT_ROOT
    ignored = subprocess.run(["git", "check-ignore", "-q", str(airflow_stack.DEFAULT_HOME / "airflow.db")], cwd=root)
    assert ignored.returncode == 0


def test_a_port_in_use_is_a_clear_message(tmp_path):
    s = stack(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", s.config.api_port))
        busy.listen()
        with pytest.raises(StackError, match=rf"port in use: 127.0.0.1:{s.config.api_port} .*FRUITS_AIRFLOW_PORT"):
            s.start()
    assert not s.procs


def test_a_running_stack_is_not_started_twice(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "stack.pid").write_text(json.dumps({"supervisor": sleeper.pid, "children": {}}))
        refused = stack(tmp_path)
        with pytest.raises(StackError, match=f"already running .*pid {sleeper.pid}"):
            refused.start()
        refused.stop()
        assert (tmp_path / "stack.pid").exists(), "the running stack's pid file must stay"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_what_a_crashed_stack_left_behind_is_stopped(tmp_path):
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "stack.pid").write_text(json.dumps({"supervisor": dead.pid, "children": {"scheduler": orphan.pid}}))
    s = stack(tmp_path)
    s._clear_stale_pid_file()
    assert orphan.wait(timeout=30) != 0
    assert not (tmp_path / "stack.pid").exists()


def test_every_process_shares_the_settings_that_must_match(tmp_path, monkeypatch):
    monkeypatch.delenv("FRUITS_SCHEDULE", raising=False)
    s = stack(tmp_path, db_url=None)
    s.endpoint = "http://127.0.0.1:1"
    env = s._environment()
    port = s.config.api_port
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{port}/execution/"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow.db'}"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64 and env["AIRFLOW__API_AUTH__JWT_ISSUER"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags") and env["AIRFLOW__CORE__PLUGINS_FOLDER"].endswith(
        "/plugins"
    )
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False" and env["FRUITS_SCHEDULE"] == "none"
    assert json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"] == "http://127.0.0.1:1"
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["host"].startswith("local[")
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert json.loads(open(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read()) == {"admin": "admin"}
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    # Secrets are generated once per folder: a restart keeps sessions and tokens valid.
    assert s._environment()["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert oct(os.stat(tmp_path / "secrets.json").st_mode & 0o777) == "0o600"
    s.env = env
    s._write_env_file()
    exported = (tmp_path / "env.sh").read_text()
    assert "export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=" in exported and "export AIRFLOW_HOME=" in exported
