"""The time a cluster needs, worst case, and the checks that keep it inside the DAG run's timeout.

When a DAG run times out, Airflow marks its unfinished tasks skipped, the terminate teardown
included: a cluster created too late would outlive its run. So the tasks from create_cluster to
terminate_cluster have bounded timeouts and retries (defined here, used by tasks.py), and

  * at parse time, their worst case (every attempt timing out, every retry delay at its maximum)
    plus an allowance for the tasks before them must fit in the DAG's `dagrun_timeout`;
  * the trigger form's `sensor_timeout` is capped so that a run which waited that long still has
    that worst case left (fruits.params, through `reserved_seconds`);
  * right before create_cluster, cluster_spec refuses to request a cluster when the run has less
    than that worst case left (a run slowed down by retries, a stalled scheduler ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fruits.errors import PermanentError
from fruits.settings import Settings

ADD_STEP_TIMEOUT = 10 * 60  # EmrAddStepsOperator without waiting: one API call
WAIT_GRACE = 10 * 60  # a wait's execution_timeout over its polling (max_attempts x poll) and log wait
STARTUP_GRACE = 10 * 60  # create_cluster's execution_timeout over the start-up wait
TERMINATE_TIMEOUT = 20 * 60  # the longest a cluster may take to terminate (EMR: minutes)
TERMINATE_GRACE = 5 * 60
MAX_RETRY_DELAY = 5 * 60  # max_retry_delay of the cluster tasks that retry
SCHEDULING_MARGIN = 10 * 60  # queueing between the tasks of the chain
# The tasks between the sensor and the cluster (plan, guards, code upload, request), normal case.
PREPARATION_ALLOWANCE = 30 * 60


class RunTimeoutTooShort(PermanentError, ValueError):
    """The cluster's teardown could be cut by the DAG run's timeout."""


@dataclass(frozen=True)
class TaskBudget:
    task_id: str
    timeout: int  # execution_timeout, seconds
    retries: int

    @property
    def worst_case(self) -> int:
        return (self.retries + 1) * self.timeout + self.retries * MAX_RETRY_DELAY


def cluster_tasks(settings: Settings, step_plan: list[tuple[str, int]]) -> list[TaskBudget]:
    """The chain from create_cluster to terminate_cluster, with the timeouts tasks.py gives them."""
    chain = [TaskBudget("create_cluster", settings.emr_startup_timeout + STARTUP_GRACE, 0)]
    for name, timeout_seconds in step_plan:
        chain.append(TaskBudget(f"add_{name}_step", ADD_STEP_TIMEOUT, settings.task_retries))
        # a failed step's sensor then waits up to emr_log_wait for its logs (sensors.py)
        chain.append(TaskBudget(f"wait_{name}", timeout_seconds + settings.emr_log_wait + WAIT_GRACE, 0))
    chain.append(TaskBudget("terminate_cluster", TERMINATE_TIMEOUT + TERMINATE_GRACE, terminate_retries(settings)))
    return chain


def terminate_retries(settings: Settings) -> int:
    return max(2, settings.task_retries)  # the one task where retrying is always right


def cluster_seconds(settings: Settings, step_plan: list[tuple[str, int]]) -> int:
    """Worst case from the start of create_cluster to the end of terminate_cluster."""
    return sum(task.worst_case for task in cluster_tasks(settings, step_plan)) + SCHEDULING_MARGIN


def pipeline_steps(settings: Settings) -> list[tuple[str, int]]:
    return [("featurize", settings.emr_featurize_timeout), ("pca", settings.emr_pca_timeout)]


def classifier_steps(settings: Settings) -> list[tuple[str, int]]:
    return [("classify", settings.emr_classify_timeout)]


def reserved_seconds(settings: Settings) -> int:
    """What a pipeline run needs after its sensor: preparation plus the cluster's worst case."""
    return PREPARATION_ALLOWANCE + cluster_seconds(settings, pipeline_steps(settings))


def check_fits(dag_id: str, run_timeout: timedelta | None, needed: int) -> None:
    """Parse time: the cluster chain plus the preparation allowance must fit in dagrun_timeout."""
    if run_timeout is None:
        return  # no run timeout: nothing can cut the teardown
    if needed + PREPARATION_ALLOWANCE > run_timeout.total_seconds():
        raise RunTimeoutTooShort(
            f"{dag_id}: dagrun_timeout {run_timeout.total_seconds():.0f}s is too short for the EMR cluster's "
            f"worst case ({needed}s from create_cluster to the end of terminate_cluster, plus "
            f"{PREPARATION_ALLOWANCE}s to prepare): a timed-out run skips the terminate teardown and leaves "
            f"the cluster running. Raise the run timeout (FRUITS_RUN_TIMEOUT; FRUITS_CLASSIFIER_RUN_TIMEOUT for "
            f"fruits_classifier) or lower the FRUITS_EMR_*_TIMEOUT settings."
        )


def check_time_left(
    *, started: datetime | None, now: datetime, run_timeout: timedelta | None, needed: int
) -> float | None:
    """Before create_cluster: the seconds the run has left, or RunTimeoutTooShort when a cluster
    created now might outlive the run. None when the run has no timeout."""
    if run_timeout is None or started is None:
        return None
    left = (started + run_timeout - now).total_seconds()
    if left < needed:
        raise RunTimeoutTooShort(
            f"the run has {max(left, 0):.0f}s left before its dagrun_timeout, less than the {needed}s a "
            f"cluster may need up to the end of its terminate teardown, so no cluster was created "
            f"(the batch stays for the next run)"
        )
    return left
