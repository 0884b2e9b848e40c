"""The EMR backend's step sensor: the provider's EmrStepSensor, whose failure says why.

On a FAILED, CANCELLED or INTERRUPTED step the provider raises "EMR job failed: None" (poke) or
"Error while running job: {...}" (deferrable), DescribeStep's FailureDetails being often empty.
This sensor then reads the step's logs from the cluster's LogUri (step_logs.py), writes the tail
of the driver's output to the task log and raises an exception whose first line is the job's own
error line: the line the failed run's report keeps (fruits.core.report.first_line). Success,
polling and deferral are the provider's, untouched.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from fruits.backends.emr import step_logs

log = logging.getLogger(__name__)  # in the task's log, like every task's module logger


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class EmrStepSensorWithLogs(EmrStepSensor):
    """EmrStepSensor that explains a failed step with its logs.

    :param logs_conn_id: the AWS connection that reads the LogUri's bucket
    :param log_wait_seconds: how long to wait for the logs to appear in S3 (FRUITS_EMR_LOG_WAIT)
    :param log_poll_seconds: how often to look for them meanwhile
    """

    def __init__(
        self,
        *,
        logs_conn_id: str | None = "aws_default",
        log_wait_seconds: float = 300,
        log_poll_seconds: float = 60,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.logs_conn_id = logs_conn_id
        self.log_wait_seconds = log_wait_seconds
        self.log_poll_seconds = log_poll_seconds

    def poke(self, context) -> bool:
        try:
            return super().poke(context)
        except AirflowException as provider_error:
            raise self.explained(provider_error) from None

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> None:
        try:
            super().execute_complete(context, event)
        except AirflowException as provider_error:
            raise self.explained(provider_error) from None

    def explained(self, provider_error: AirflowException) -> AirflowException:
        """For a step in a failed state, the exception that says why; otherwise (the trigger gave
        up waiting, DescribeStep failed ...) the provider's own."""
        try:
            step = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=self.step_id)["Step"]
        except Exception as exc:  # noqa: BLE001 - never hide the provider's error behind another one
            log.warning("step %s could not be described (%s)", self.step_id, exc)
            return provider_error
        status = step.get("Status", {})
        state = status.get("State")
        if state not in self.failed_states:
            return provider_error
        log.info("the provider's message: %s", provider_error)
        logs, where = self._read_logs()
        message = step_logs.failure_message(
            first_line=(logs and logs.error_line) or _first_line(str(provider_error)) or f"EMR step {state}",
            step_id=self.step_id,
            step_name=step.get("Name"),
            state=state,
            cluster_id=self.job_flow_id,
            failure_details=status.get("FailureDetails"),
            where=where,
        )
        if logs is not None and logs.found:
            log.error(
                "step %s is %s; the last lines of %s:\n%s\n%s",
                self.step_id,
                state,
                logs.tail_uri,
                logs.tail,
                "\n".join(where),
            )
        else:
            log.error("step %s is %s; %s", self.step_id, state, "\n".join(where))
        return AirflowFailException(message)  # a failed step stays failed: no retry can help

    def _read_logs(self) -> tuple[step_logs.StepLogs | None, list[str]]:
        """The step's logs and the lines saying where they are; when they cannot be read
        (permissions, no LogUri ...), None and where they would be."""
        log_uri = None
        try:
            log_uri = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"].get("LogUri")
            if not log_uri:
                return None, [f"cluster {self.job_flow_id} has no LogUri: its logs are not in S3"]
            from fruits.storage import Bucket

            bucket = Bucket.connect(self.logs_conn_id, step_logs.parse_log_uri(log_uri)[0])
            logs = step_logs.find_step_logs(
                bucket,
                log_uri,
                self.job_flow_id,
                self.step_id,
                wait_seconds=self.log_wait_seconds,
                poll_seconds=self.log_poll_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - the logs only explain; their absence is no new failure
            reason = _first_line(str(exc)) or type(exc).__name__
            if log_uri is None:
                return None, [f"logs not read ({reason}): see the LogUri of cluster {self.job_flow_id}"]
            try:
                submit, containers = step_logs.log_locations(log_uri, self.job_flow_id, self.step_id)
            except ValueError:
                return None, [f"logs not read ({reason}): under the cluster's LogUri {log_uri}"]
            return None, [f"logs not read ({reason}): they are under {submit} (spark-submit) and {containers} (driver)"]
        return logs, logs.where()
