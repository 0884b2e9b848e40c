"""Deployment settings read from the environment (FRUITS_*), with the defaults users expect.

Read when the DAG file is parsed, so they must stay cheap: no network, no heavy imports.
The trigger form's Params take their defaults from here; a run can still override them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPUTE_BACKENDS = ("local", "emr")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value if value else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


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
    sensor_poke_interval: int = field(default_factory=lambda: _env_int("FRUITS_SENSOR_POKE_INTERVAL", 60))
    schedule: str | None = field(default_factory=lambda: _env("FRUITS_SCHEDULE", "@hourly"))
    aws_conn_id: str = field(default_factory=lambda: _env("FRUITS_AWS_CONN_ID", "aws_default"))
    spark_conn_id: str = field(default_factory=lambda: _env("FRUITS_SPARK_CONN_ID", "spark_default"))
    task_retries: int = field(default_factory=lambda: _env_int("FRUITS_TASK_RETRIES", 2))
    work_dir: Path = field(default_factory=lambda: Path(_env("FRUITS_WORK_DIR", "/tmp/fruits-pipeline")))
    spark_jobs_dir: Path = field(
        default_factory=lambda: Path(_env("FRUITS_SPARK_JOBS_DIR", str(PROJECT_ROOT / "spark_jobs"))))

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_BACKENDS:
            raise ValueError(f"FRUITS_COMPUTE must be one of {COMPUTE_BACKENDS}, got {self.compute!r}")
        if self.schedule and self.schedule.lower() in ("none", "manual"):
            object.__setattr__(self, "schedule", None)


def load() -> Settings:
    return Settings()
