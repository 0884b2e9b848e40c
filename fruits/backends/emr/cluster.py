"""The RunJobFlow request of one run's transient cluster: release, instances, bootstrap action,
Spark configurations, LogUri, idle auto-termination, tags. Pure functions of their arguments."""

from __future__ import annotations

import re

from fruits import layout
from fruits.settings import DEFAULT_EMR_RELEASE_LABEL as DEFAULT_RELEASE_LABEL

PROJECT_TAG = "fruits-pipeline"
RELEASE_LABEL_PATTERN = r"^emr-7\.[0-9]+\.[0-9]+$"
# Graviton (arm64) types: a `g` right after the generation digit (m7g, c7gn, r8gd, g5g), and a1.
GRAVITON_PATTERN = r"^(a1|[a-z]+[0-9]+g[a-z0-9-]*)\."
MIN_IDLE_TIMEOUT, MAX_IDLE_TIMEOUT = 60, 7 * 24 * 3600  # AutoTerminationPolicy bounds

# What bootstrap.sh installs on every node, and what Spark's Python workers must run.
VENV_DIR = "/opt/fruits/venv"
PYTHON = f"{VENV_DIR}/bin/python3"


def tag_value(value: str) -> str:
    """EMR tag values allow letters, digits, spaces and + - = . _ : / @ (at most 256 characters)."""
    return re.sub(r"[^\w +\-=.:/@]", "_", str(value))[:256]


def cluster_tags(*, run_id: str, dag_id: str, batch_id: str) -> list[dict[str, str]]:
    return [
        {"Key": "project", "Value": PROJECT_TAG},
        {"Key": "dag_id", "Value": tag_value(dag_id)},
        {"Key": "run_id", "Value": tag_value(run_id)},
        {"Key": "batch_id", "Value": tag_value(batch_id)},
        # Required on the cluster when the service role uses the AmazonEMRServicePolicy_v2 managed policy.
        {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"},
    ]


def spark_configurations(python: str = PYTHON) -> list[dict]:
    """Spark's driver and Python workers run the bootstrap's interpreter, with a one-thread BLAS."""
    env = {"PYSPARK_PYTHON": python, "TF_CPP_MIN_LOG_LEVEL": "2", "OPENBLAS_NUM_THREADS": "1"}
    defaults = {"spark.pyspark.python": python, "spark.pyspark.driver.python": python}
    for name, value in env.items():
        defaults[f"spark.executorEnv.{name}"] = value
        defaults[f"spark.yarn.appMasterEnv.{name}"] = value  # the driver, in cluster deploy mode
    return [
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [{"Classification": "export", "Properties": dict(env)}],
        },
        {"Classification": "spark-defaults", "Properties": defaults},
    ]


def node_architecture(instance_type: str) -> str:
    """`uname -m` of an instance type's nodes: which wheelhouse folder their bootstrap installs from."""
    return "aarch64" if re.match(GRAVITON_PATTERN, instance_type) else "x86_64"


def node_architectures(groups: list[dict]) -> list[str]:
    """The architectures of a request's instance groups (the wheelhouses its cluster needs)."""
    return sorted({node_architecture(group["InstanceType"]) for group in groups})


def instance_groups(
    *, master_instance_type: str, core_instance_type: str, core_instance_count: int, core_spot: bool
) -> list[dict]:
    groups = [
        {
            "Name": "primary",
            "InstanceRole": "MASTER",
            "Market": "ON_DEMAND",
            "InstanceType": master_instance_type,
            "InstanceCount": 1,
        }
    ]
    if core_instance_count > 0:
        # Spot without BidPrice: capped at the On-Demand price.
        groups.append(
            {
                "Name": "core",
                "InstanceRole": "CORE",
                "Market": "SPOT" if core_spot else "ON_DEMAND",
                "InstanceType": core_instance_type,
                "InstanceCount": core_instance_count,
            }
        )
    return groups


def job_flow_overrides(
    *,
    name: str,
    release_label: str,
    log_uri: str,
    code: dict[str, str],
    master_instance_type: str,
    core_instance_type: str,
    core_instance_count: int,
    core_spot: bool,
    idle_timeout: int,
    job_flow_role: str,
    service_role: str,
    tags: list[dict[str, str]],
    subnet_id: str | None = None,
    core_max_instance_count: int = 0,
) -> dict:
    """The RunJobFlow request of one run's transient cluster."""
    if not re.fullmatch(RELEASE_LABEL_PATTERN, release_label):
        raise ValueError(
            f"release label {release_label!r} is not an EMR 7.x release (Spark 3.5), e.g. {DEFAULT_RELEASE_LABEL}"
        )
    if not MIN_IDLE_TIMEOUT <= idle_timeout <= MAX_IDLE_TIMEOUT:
        raise ValueError(f"idle_timeout must be between {MIN_IDLE_TIMEOUT} and {MAX_IDLE_TIMEOUT} seconds")
    if core_instance_count < 0:
        raise ValueError("core_instance_count cannot be negative")
    instances = {
        "InstanceGroups": instance_groups(
            master_instance_type=master_instance_type,
            core_instance_type=core_instance_type,
            core_instance_count=core_instance_count,
            core_spot=core_spot,
        ),
        # Steps are added after creation: without this the cluster would end before the first one.
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if subnet_id:
        instances["Ec2SubnetId"] = subnet_id
    overrides = {
        "Name": name[:256],
        "ReleaseLabel": release_label,
        "Applications": [{"Name": "Spark"}],
        "LogUri": log_uri,
        "Instances": instances,
        "BootstrapActions": [
            {
                "Name": "fruits-python-dependencies",
                # bootstrap.sh <requirements-uri> <wheelhouse-uri>: installs from <wheelhouse-uri>/$(uname -m)/
                "ScriptBootstrapAction": {
                    "Path": code["bootstrap"],
                    "Args": [code["requirements"], code["wheelhouse"]],
                },
            }
        ],
        "Configurations": spark_configurations(),
        "JobFlowRole": job_flow_role,
        "ServiceRole": service_role,
        "VisibleToAllUsers": True,
        "StepConcurrencyLevel": 1,
        # Guard against a forgotten cluster: EMR ends it itself after this long without work.
        "AutoTerminationPolicy": {"IdleTimeout": int(idle_timeout)},
        "Tags": tags,
    }
    if core_max_instance_count > core_instance_count > 0:
        # Managed scaling: the core group grows with the work (YARN demand) up to the maximum.
        overrides["ManagedScalingPolicy"] = {
            "ComputeLimits": {
                "UnitType": "Instances",
                "MinimumCapacityUnits": core_instance_count,
                "MaximumCapacityUnits": core_max_instance_count,
                "MaximumCoreCapacityUnits": core_max_instance_count,
            }
        }
    return overrides


def log_uri(bucket: str, log_prefix: str) -> str:
    return layout.s3_uri(bucket, log_prefix if log_prefix.endswith("/") else log_prefix + "/")
