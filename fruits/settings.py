"""Deployment settings read from the environment (FRUITS_*), with the defaults users expect.

Read when the DAG file is parsed, so they must stay cheap: no network, no heavy imports.
The trigger form's Params take their defaults from here; a run can still override them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPUTE_BACKENDS = ("local", "emr")  # the packages under fruits/backends/
DEFAULT_REGION = "eu-west-3"  # Paris
# AWS regions in EU member states (Ireland, Paris, Frankfurt, Stockholm, Milan, Spain): not London
# (eu-west-2) nor Zurich (eu-central-2), outside the EU. The default of FRUITS_EMR_ALLOWED_REGIONS.
EU_MEMBER_STATE_REGIONS = ("eu-west-3", "eu-west-1", "eu-central-1", "eu-north-1", "eu-south-1", "eu-south-2")
# Instance types a run may ask for unless FRUITS_EMR_ALLOWED_INSTANCE_TYPES says otherwise: general
# purpose and compute optimised, x86_64 and Graviton, up to 4xlarge.
DEFAULT_EMR_INSTANCE_TYPES = (
    "m5.xlarge",
    "m5.2xlarge",
    "m6i.xlarge",
    "m6i.2xlarge",
    "m7i.xlarge",
    "m7i.2xlarge",
    "c6i.xlarge",
    "c6i.2xlarge",
    "c6i.4xlarge",
    "c7i.xlarge",
    "c7i.2xlarge",
    "c7i.4xlarge",
    "m7g.xlarge",
    "m7g.2xlarge",
    "c7g.xlarge",
    "c7g.2xlarge",
    "c7g.4xlarge",
)
# The instance profile of the cluster nodes: the least-privilege role of docs/emr.md
# (fruits/backends/emr/iam.py:instance_role_policy), not EMR_EC2_DefaultRole (s3:* on every bucket).
DEFAULT_EMR_JOB_FLOW_ROLE = "fruits-pipeline-emr-ec2"
# EMR 7.x = Spark 3.5; 7.13.0 (April 2026) ships Spark 3.5.6 and Python 3.9 + 3.11 on Amazon Linux 2023.
DEFAULT_EMR_RELEASE_LABEL = "emr-7.13.0"
# The PyPI pyspark closest to that label's Spark (3.5.6-amzn-2 on emr-7.13.0): `make emr-stack`
# runs the jobs on it, as the cluster would. Change both together.
EMR_SPARK_VERSION = "3.5.6"
WHEELHOUSE_SETTING = "FRUITS_EMR_WHEELHOUSE"
JARS_CACHE_SETTING = "FRUITS_SPARK_JARS_CACHE"
# A size Spark's spark.driver.memory takes: a whole number (MiB) or one with a unit (k, m, g, t, p, or b).
JVM_MEMORY_PATTERN = r"[0-9]+([kmgtp]b?|b)?"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value if value else default


def default_emr_wheelhouse() -> Path:
    """Where `make emr-wheelhouse` keeps the wheels EMR nodes install: a cache outside the checkout,
    so a clean clone on the same machine downloads nothing again."""
    return Path.home() / ".cache" / "fruits-pipeline" / "wheelhouse"


def emr_wheelhouse_dir() -> Path:
    """The wheelhouse folder of this deployment: FRUITS_EMR_WHEELHOUSE, else the default cache."""
    return Path(_env(WHEELHOUSE_SETTING, str(default_emr_wheelhouse()))).expanduser()


def spark_jars_cache_dir() -> Path:
    """Where Ivy resolves the S3A jars and their lists are kept (fruits/spark_s3a.py): FRUITS_SPARK_JARS_CACHE,
    else a cache outside the checkout shared by every clone."""
    return Path(_env(JARS_CACHE_SETTING, str(Path.home() / ".cache" / "fruits-pipeline" / "ivy"))).expanduser()


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _env_optional(name: str) -> str | None:
    return _env(name, "") or None


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list; unset or empty gives the default."""
    raw = _env(name, "")
    return tuple(item.strip() for item in raw.split(",") if item.strip()) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    compute: str = field(default_factory=lambda: _env("FRUITS_COMPUTE", "local").lower())
    bucket: str = field(default_factory=lambda: _env("FRUITS_BUCKET", "fruits"))
    landing_prefix: str = field(default_factory=lambda: _env("FRUITS_LANDING_PREFIX", "landing/"))
    weights: str = field(default_factory=lambda: _env("FRUITS_WEIGHTS", "imagenet"))
    image_size: int = field(default_factory=lambda: _env_int("FRUITS_IMAGE_SIZE", 224))
    pca_variance: float = field(default_factory=lambda: _env_float("FRUITS_PCA_VARIANCE", 0.95))
    sensor_timeout: int = field(default_factory=lambda: _env_int("FRUITS_SENSOR_TIMEOUT", 3600))
    # The DAG run's timeout (dagrun_timeout). The EMR backend checks at parse time, and again before it
    # creates a cluster, that the cluster's steps and its teardown fit in it (fruits/backends/emr/budget.py).
    run_timeout: int = field(default_factory=lambda: _env_int("FRUITS_RUN_TIMEOUT", 24 * 3600))
    # The same for fruits_classifier: its EMR cluster (one classify step) and teardown must fit in it.
    classifier_run_timeout: int = field(default_factory=lambda: _env_int("FRUITS_CLASSIFIER_RUN_TIMEOUT", 6 * 3600))
    # Buckets besides the run's own that a `weights=s3://...` Param may name.
    weights_buckets: tuple[str, ...] = field(default_factory=lambda: _env_list("FRUITS_WEIGHTS_BUCKETS", ()))
    sensor_poke_interval: int = field(default_factory=lambda: _env_int("FRUITS_SENSOR_POKE_INTERVAL", 60))
    schedule: str | None = field(default_factory=lambda: _env("FRUITS_SCHEDULE", "@hourly"))
    # What starts a run (docs/events.md): `poll`, the schedule above plus the sensor (MinIO, compose),
    # or `sqs`, S3 event notifications on the landing prefix received by the triggerer from this queue.
    trigger: str = field(default_factory=lambda: _env("FRUITS_TRIGGER", "poll").lower())
    sqs_queue_url: str | None = field(default_factory=lambda: _env_optional("FRUITS_SQS_QUEUE_URL"))
    sqs_poll_seconds: int = field(default_factory=lambda: _env_int("FRUITS_SQS_POLL_SECONDS", 60))
    aws_conn_id: str = field(default_factory=lambda: _env("FRUITS_AWS_CONN_ID", "aws_default"))
    spark_conn_id: str = field(default_factory=lambda: _env("FRUITS_SPARK_CONN_ID", "spark_default"))
    task_retries: int = field(default_factory=lambda: _env_int("FRUITS_TASK_RETRIES", 2))
    spark_jobs_dir: Path = field(
        default_factory=lambda: Path(_env("FRUITS_SPARK_JOBS_DIR", str(PROJECT_ROOT / "spark_jobs")))
    )
    # Local backend: the memory of spark-submit's driver, which runs the local[*] jobs (a JVM size: 4g, 2048m).
    spark_driver_memory: str = field(default_factory=lambda: _env("FRUITS_SPARK_DRIVER_MEMORY", "4g"))
    # Hadoop's S3A jars for a Spark outside EMR (fruits/spark_s3a.py), resolved by `make venv`.
    spark_jars_cache: Path = field(default_factory=spark_jars_cache_dir)
    # EMR backend (FRUITS_COMPUTE=emr): defaults of the trigger form's EMR params ...
    emr_region: str = field(default_factory=lambda: _env("FRUITS_EMR_REGION", DEFAULT_REGION))
    emr_release_label: str = field(default_factory=lambda: _env("FRUITS_EMR_RELEASE_LABEL", DEFAULT_EMR_RELEASE_LABEL))
    emr_master_instance_type: str = field(default_factory=lambda: _env("FRUITS_EMR_MASTER_INSTANCE_TYPE", "m5.xlarge"))
    emr_core_instance_type: str = field(default_factory=lambda: _env("FRUITS_EMR_CORE_INSTANCE_TYPE", "m5.xlarge"))
    emr_core_instance_count: int = field(default_factory=lambda: _env_int("FRUITS_EMR_CORE_INSTANCE_COUNT", 2))
    emr_core_max_instance_count: int = field(default_factory=lambda: _env_int("FRUITS_EMR_CORE_MAX_INSTANCE_COUNT", 0))
    emr_core_spot: bool = field(default_factory=lambda: _env_bool("FRUITS_EMR_CORE_SPOT", False))
    emr_idle_timeout: int = field(default_factory=lambda: _env_int("FRUITS_EMR_IDLE_TIMEOUT", 1800))
    # ... and deployment configuration that is never a run parameter (limits, roles, network, connection).
    # The limits: a run's region, instance types and node counts must be within them.
    emr_allowed_regions: tuple[str, ...] = field(
        default_factory=lambda: _env_list("FRUITS_EMR_ALLOWED_REGIONS", EU_MEMBER_STATE_REGIONS)
    )
    emr_allowed_instance_types: tuple[str, ...] = field(
        default_factory=lambda: _env_list("FRUITS_EMR_ALLOWED_INSTANCE_TYPES", DEFAULT_EMR_INSTANCE_TYPES)
    )
    emr_max_core_nodes: int = field(default_factory=lambda: _env_int("FRUITS_EMR_MAX_CORE_NODES", 10))
    emr_subnet_id: str | None = field(default_factory=lambda: _env_optional("FRUITS_EMR_SUBNET_ID"))
    emr_job_flow_role: str = field(default_factory=lambda: _env("FRUITS_EMR_JOB_FLOW_ROLE", DEFAULT_EMR_JOB_FLOW_ROLE))
    emr_service_role: str = field(default_factory=lambda: _env("FRUITS_EMR_SERVICE_ROLE", "EMR_DefaultRole"))
    emr_conn_id: str | None = field(default_factory=lambda: _env_optional("FRUITS_EMR_CONN_ID"))
    # The wheels the nodes install at boot (fruits/backends/emr/wheelhouse.py: <folder>/<key>/<arch>/),
    # built by `make emr-wheelhouse`; upload_code copies those the run's instance types need.
    emr_wheelhouse: Path = field(default_factory=emr_wheelhouse_dir)
    emr_log_prefix: str = field(default_factory=lambda: _env("FRUITS_EMR_LOG_PREFIX", "emr-logs/"))
    emr_poll_seconds: int = field(default_factory=lambda: _env_int("FRUITS_EMR_POLL_SECONDS", 60))
    # How long a failed step's sensor waits for its logs in S3 (EMR uploads them every few minutes),
    # to say why it failed (fruits/backends/emr/step_logs.py); 0 reads once, without waiting.
    emr_log_wait: int = field(default_factory=lambda: _env_int("FRUITS_EMR_LOG_WAIT", 300))
    emr_startup_timeout: int = field(default_factory=lambda: _env_int("FRUITS_EMR_STARTUP_TIMEOUT", 2700))
    emr_featurize_timeout: int = field(default_factory=lambda: _env_int("FRUITS_EMR_FEATURIZE_TIMEOUT", 6 * 3600))
    emr_pca_timeout: int = field(default_factory=lambda: _env_int("FRUITS_EMR_PCA_TIMEOUT", 2 * 3600))
    emr_classify_timeout: int = field(default_factory=lambda: _env_int("FRUITS_EMR_CLASSIFY_TIMEOUT", 2 * 3600))

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_BACKENDS:
            raise ValueError(f"FRUITS_COMPUTE must be one of {COMPUTE_BACKENDS}, got {self.compute!r}")
        if self.schedule and self.schedule.lower() in ("none", "manual"):
            object.__setattr__(self, "schedule", None)
        self._check_trigger()
        if self.emr_poll_seconds < 1:
            raise ValueError(f"FRUITS_EMR_POLL_SECONDS must be at least 1, got {self.emr_poll_seconds}")
        if self.emr_log_wait < 0:
            raise ValueError(f"FRUITS_EMR_LOG_WAIT cannot be negative, got {self.emr_log_wait}")
        if not self.emr_log_prefix.endswith("/"):
            object.__setattr__(self, "emr_log_prefix", self.emr_log_prefix + "/")
        if self.run_timeout < 3600:
            raise ValueError(f"FRUITS_RUN_TIMEOUT must be at least 3600 seconds, got {self.run_timeout}")
        if self.classifier_run_timeout < 3600:
            raise ValueError(
                f"FRUITS_CLASSIFIER_RUN_TIMEOUT must be at least 3600 seconds, got {self.classifier_run_timeout}"
            )
        if not re.fullmatch(JVM_MEMORY_PATTERN, self.spark_driver_memory, re.IGNORECASE):
            raise ValueError(
                f"FRUITS_SPARK_DRIVER_MEMORY must be a JVM memory size such as 4g or 2048m, "
                f"got {self.spark_driver_memory!r}"
            )
        if self.emr_max_core_nodes < 0:
            raise ValueError(f"FRUITS_EMR_MAX_CORE_NODES cannot be negative, got {self.emr_max_core_nodes}")

    def _check_trigger(self) -> None:
        from fruits import events  # standard library only at import

        if self.trigger not in events.TRIGGERS:
            raise ValueError(f"FRUITS_TRIGGER must be one of {events.TRIGGERS}, got {self.trigger!r}")
        if self.trigger == "sqs" and not self.sqs_queue_url:
            raise ValueError(
                "FRUITS_TRIGGER=sqs needs FRUITS_SQS_QUEUE_URL, the queue the landing prefix's "
                "S3 event notifications go to (docs/events.md)"
            )
        if self.sqs_queue_url:
            events.parse_queue_url(self.sqs_queue_url)
        if self.sqs_poll_seconds < 1:
            raise ValueError(f"FRUITS_SQS_POLL_SECONDS must be at least 1, got {self.sqs_poll_seconds}")


def load() -> Settings:
    return Settings()
