"""Thin operator subclasses that add what the run report needs."""

from __future__ import annotations

import time

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator


class TimedSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator that returns its wall-clock seconds (XCom) for the run report."""

    def execute(self, context) -> dict:
        started = time.perf_counter()
        super().execute(context)
        return {"seconds": round(time.perf_counter() - started, 2)}
