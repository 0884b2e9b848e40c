"""What a run may ask of EMR: the deployment's limits on instance types and node counts.

The trigger form offers only what the deployment allows (FRUITS_EMR_ALLOWED_INSTANCE_TYPES,
FRUITS_EMR_MAX_CORE_NODES); `check_cluster_params` refuses anything else again in code, before
any cluster is created, since Params can also come from the REST API or a run's conf.
"""

from __future__ import annotations

from fruits.errors import PermanentError
from fruits.settings import Settings

INSTANCE_TYPES_SETTING = "FRUITS_EMR_ALLOWED_INSTANCE_TYPES"
MAX_CORE_NODES_SETTING = "FRUITS_EMR_MAX_CORE_NODES"


class LimitExceeded(PermanentError, ValueError):
    """A run asked for a cluster the deployment does not allow."""


def check_cluster_params(params: dict, settings: Settings) -> None:
    """Refuse instance types outside the allowed list and more core nodes than the maximum."""
    problems = []
    allowed = settings.emr_allowed_instance_types
    for name in ("master_instance_type", "core_instance_type"):
        if params[name] not in allowed:
            problems.append(
                f"{name} {params[name]!r} is not one of the allowed instance types "
                f"({', '.join(allowed)}; deployment setting {INSTANCE_TYPES_SETTING})"
            )
    for name in ("core_instance_count", "core_max_instance_count"):
        count = params[name]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            problems.append(f"{name} must be a whole number of nodes, got {count!r}")
        elif count > settings.emr_max_core_nodes:
            problems.append(
                f"{name} {count} is above the maximum of {settings.emr_max_core_nodes} core nodes "
                f"(deployment setting {MAX_CORE_NODES_SETTING})"
            )
    if problems:
        raise LimitExceeded(
            "the run asks for a cluster this deployment does not allow, so none was created: " + "; ".join(problems)
        )


def check_defaults(settings: Settings) -> None:
    """Parse time: the form's defaults must be within the limits they are checked against."""
    check_cluster_params(
        {
            "master_instance_type": settings.emr_master_instance_type,
            "core_instance_type": settings.emr_core_instance_type,
            "core_instance_count": settings.emr_core_instance_count,
            "core_max_instance_count": settings.emr_core_max_instance_count,
        },
        settings,
    )
