"""Thin operator subclasses that add what the run report needs."""

from __future__ import annotations

import time

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException

from fruits.job_output import error_line


class TimedSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator that returns its wall-clock seconds (XCom) for the run report, and
    whose failure starts with the job's own error line (the provider's starts "Cannot execute:
    <command>"; its tail of spark-submit's output holds the job's words)."""

    def execute(self, context) -> dict:
        started = time.perf_counter()
        try:
            super().execute(context)
        except AirflowException as exc:
            reason = error_line(str(exc))
            if not reason:
                raise
            raise AirflowException(f"{reason}\n{exc}") from None  # the report keeps the first line
        return {"seconds": round(time.perf_counter() - started, 2)}
