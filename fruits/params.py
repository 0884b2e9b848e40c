"""The trigger forms: the Params every run of each DAG takes, with defaults from the deployment
settings, and the checks they get where they enter.

The compute backend adds its own (`fruits.backends.<name>.params`); `for_dag` (fruits_pipeline) and
`for_classifier` (fruits_classifier) join them. The Params' JSON schema refuses what it can express
(Airflow validates a run's conf against it when the run is created); `check_run_params` and
`check_classifier_params` refuse the rest, and everything again, in code: a weights URI in a bucket
that is not allowed, a sensor timeout the run cannot afford. Both raise InvalidParams, a
PermanentError: the task fails at once.
"""

from __future__ import annotations

import re
from types import ModuleType

from airflow.sdk import Param

from fruits.contract import FEATURE_DIM, PCA_REFIT_CHOICES
from fruits.core import pca_policy
from fruits.errors import PermanentError
from fruits.settings import Settings

# S3 bucket naming rules (general purpose buckets): 3-63 characters, lower-case letters, digits,
# dots and hyphens, starting and ending with a letter or digit; no "..", no IP address, none of
# the reserved prefixes and suffixes.
BUCKET_NAME_PATTERN = (
    r"^(?!xn--|sthree-|amzn-s3-demo-)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)"
    r"(?!.*(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
)
# `imagenet`, `none`, or an s3:// object URI (which bucket is allowed is checked in code).
WEIGHTS_PATTERN = r"^(imagenet|none|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\s]+)$"
# Airflow's default allowed_run_id_pattern, within its 250-character run_id column; empty: no run named.
PCA_RUN_ID_PATTERN = r"^([A-Za-z0-9_.~:+-]{1,250})?$"
# Backends holding nothing outside the run (local Spark) still need time to compute after the sensor.
DEFAULT_RESERVED_SECONDS = 3600


class InvalidParams(PermanentError, ValueError):
    """A run's Params that must not reach a task."""


def reserved_seconds(settings: Settings, backend: ModuleType | None) -> int:
    """Time the backend needs after the sensor; a backend whose resources can outlive the run
    (EMR) says how much, so that the run timeout never cuts its teardown."""
    reserve = getattr(backend, "reserved_seconds", None)
    return reserve(settings) if reserve is not None else DEFAULT_RESERVED_SECONDS


def max_sensor_timeout(settings: Settings, backend: ModuleType | None) -> int:
    """The longest a run may wait for images and still finish before its run timeout."""
    longest = settings.run_timeout - reserved_seconds(settings, backend)
    if longest < settings.sensor_timeout:
        raise InvalidParams(
            f"FRUITS_SENSOR_TIMEOUT={settings.sensor_timeout}s leaves the run too little time: the run timeout "
            f"(FRUITS_RUN_TIMEOUT={settings.run_timeout}s) allows waiting at most {max(longest, 0)}s, the "
            f"compute backend needing {reserved_seconds(settings, backend)}s after the sensor"
        )
    return longest


def bucket_param(settings: Settings, description: str) -> Param:
    return Param(
        settings.bucket, type="string", minLength=3, maxLength=63, pattern=BUCKET_NAME_PATTERN, description=description
    )


def pipeline_params(settings: Settings, sensor_timeout_max: int | None = None) -> dict[str, Param]:
    if sensor_timeout_max is None:
        sensor_timeout_max = max_sensor_timeout(settings, None)
    return {
        "bucket": bucket_param(settings, "S3 bucket holding the landing prefix and every output."),
        "landing_prefix": Param(
            settings.landing_prefix, type="string", description="Prefix where new images land, e.g. `landing/`."
        ),
        "weights": Param(
            settings.weights,
            type="string",
            minLength=1,
            pattern=WEIGHTS_PATTERN,
            description="`imagenet` (Keras download), `none` (seeded random, offline) or the "
            "s3:// URI of a Keras `.weights.h5` file in the run's bucket (or a bucket "
            "the deployment allows in FRUITS_WEIGHTS_BUCKETS).",
        ),
        "image_size": Param(
            settings.image_size,
            type="integer",
            minimum=32,
            maximum=1024,
            description="Model input size in pixels (224 for ImageNet weights).",
        ),
        "pca_k": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=FEATURE_DIM,
            description=f"Fixed number of PCA components (at most {FEATURE_DIM}, the feature size); "
            "leave empty to use pca_variance.",
        ),
        "pca_variance": Param(
            settings.pca_variance,
            type="number",
            exclusiveMinimum=0,
            maximum=1,
            description="Smallest k reaching this cumulative explained variance.",
        ),
        "pca_refit": Param(
            "auto",
            type="string",
            enum=list(PCA_REFIT_CHOICES),
            description="auto: project the new batch into the current PCA space unless its "
            "subspace moved more than pca_refit_angle (or k changed); always: refit "
            "and re-project every committed batch; never: keep the space.",
        ),
        "pca_refit_angle": Param(
            pca_policy.DEFAULT_REFIT_ANGLE,
            type="number",
            exclusiveMinimum=0,
            maximum=90,
            description="Degrees: the largest principal angle between the current and the "
            "merged top-k subspace above which `auto` refits.",
        ),
        "sensor_timeout": Param(
            settings.sensor_timeout,
            type="integer",
            minimum=0,
            maximum=sensor_timeout_max,
            description="Seconds to wait for new images before the run is skipped (at most "
            f"{sensor_timeout_max}: the run must keep time to compute and clean up "
            "before its timeout).",
        ),
    }


def for_dag(settings: Settings, backend: ModuleType) -> dict[str, Param]:
    return {**pipeline_params(settings, max_sensor_timeout(settings, backend)), **backend.params(settings)}


def classifier_params(settings: Settings) -> dict[str, Param]:
    return {
        "bucket": bucket_param(
            settings, "S3 bucket of the pipeline (used when the run is not triggered by an Asset event)."
        ),
        "pca_run_id": Param(
            "",
            type="string",
            maxLength=250,
            pattern=PCA_RUN_ID_PATTERN,
            description="fruits_pipeline run whose PCA vectors to train on; empty: the run of the "
            "triggering Asset event, else the latest committed run.",
        ),
    }


def for_classifier(settings: Settings, backend: ModuleType) -> dict[str, Param]:
    return {**classifier_params(settings), **backend.params(settings)}


def check_bucket_name(name: str) -> None:
    if not isinstance(name, str) or not re.search(BUCKET_NAME_PATTERN, name):
        raise InvalidParams(
            f"bucket {name!r} is not a valid S3 bucket name (3-63 lower-case letters, digits, "
            f"dots and hyphens, starting and ending with a letter or digit, no '..', not an IP "
            f"address, no reserved prefix or suffix)"
        )


def check_weights(weights: str, bucket: str, allowed_buckets: tuple[str, ...] = ()) -> None:
    """`imagenet`, `none`, or an s3:// URI in the run's bucket or one the deployment allows."""
    if not isinstance(weights, str) or not re.search(WEIGHTS_PATTERN, weights):
        raise InvalidParams(
            f"weights {weights!r} must be `imagenet`, `none` or an s3://bucket/key URI of a Keras weights file"
        )
    if weights.startswith("s3://"):
        weights_bucket = weights[len("s3://") :].split("/", 1)[0]
        allowed = (bucket, *allowed_buckets)
        if weights_bucket not in allowed:
            raise InvalidParams(
                f"weights {weights!r} are in bucket {weights_bucket!r}, which is neither the run's "
                f"bucket nor one of FRUITS_WEIGHTS_BUCKETS ({', '.join(allowed_buckets) or 'none'})"
            )


def check_pca_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not re.search(PCA_RUN_ID_PATTERN, run_id):
        raise InvalidParams(
            f"pca_run_id {run_id!r} must be empty or a fruits_pipeline run id (at most 250 letters, "
            f"digits and _ . ~ : + -)"
        )


def _problems(*checks) -> list[str]:
    """What each check refuses (InvalidParams), so that a run's conf is told every problem at once."""
    problems = []
    for check in checks:
        try:
            check()
        except InvalidParams as exc:
            problems.append(str(exc))
    return problems


def check_run_params(values: dict, settings: Settings, backend: ModuleType | None = None) -> None:
    """Everything the schema says, and what it cannot: called by the first tasks that use the Params
    (plan_batch; the EMR backend's check_region), so a run's conf never reaches S3 or EMR unchecked."""
    problems = _problems(
        lambda: check_bucket_name(values["bucket"]),
        lambda: check_weights(values["weights"], values["bucket"], settings.weights_buckets),
    )
    pca_k = values.get("pca_k")
    if pca_k is not None and (isinstance(pca_k, bool) or not isinstance(pca_k, int) or not 1 <= pca_k <= FEATURE_DIM):
        problems.append(f"pca_k {pca_k!r} must be empty or a whole number from 1 to {FEATURE_DIM} (the feature size)")
    if values.get("pca_refit", "auto") not in PCA_REFIT_CHOICES:
        problems.append(f"pca_refit {values.get('pca_refit')!r} must be one of {', '.join(PCA_REFIT_CHOICES)}")
    angle = values.get("pca_refit_angle", pca_policy.DEFAULT_REFIT_ANGLE)
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0 < angle <= 90:
        problems.append(f"pca_refit_angle {angle!r} must be a number of degrees above 0 and at most 90")
    sensor_timeout, longest = values.get("sensor_timeout"), max_sensor_timeout(settings, backend)
    if isinstance(sensor_timeout, bool) or not isinstance(sensor_timeout, int) or not 0 <= sensor_timeout <= longest:
        problems.append(
            f"sensor_timeout {sensor_timeout!r} must be from 0 to {longest} seconds: the run must keep "
            f"time to compute and clean up before its timeout ({settings.run_timeout}s)"
        )
    if problems:
        raise InvalidParams("invalid run parameters: " + "; ".join(problems))


def check_classifier_params(values: dict) -> None:
    """fruits_classifier's Params, checked the same way as the pipeline's: called by its first task
    (choose_pca_run) and again by the EMR backend's classifier_spec, before a cluster is requested."""
    problems = _problems(
        lambda: check_bucket_name(values["bucket"]), lambda: check_pca_run_id(values.get("pca_run_id", ""))
    )
    if problems:
        raise InvalidParams("invalid run parameters: " + "; ".join(problems))
