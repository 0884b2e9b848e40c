"""What a Spark job's output says about its failure, whichever backend ran it.

The jobs print `<job>: error: <message>` and exit with status 2 on an error they expect
(spark_jobs/fruits_spark/runtime.py); anything else ends in a Python traceback. `error_line`
finds that one line in a driver's output (EMR's container log, spark-submit's output), so a
failed task and the failed run's report say why in the job's own words.
"""

from __future__ import annotations

import re

# What runtime.exit_on_job_error (and argparse) print before exiting with status 2.
_JOB_ERROR = re.compile(r"(?<![\w.-])[A-Za-z_][\w.-]*: error: \S.*")
_TRACEBACK = "Traceback (most recent call last):"
_TIMESTAMP = r"\d{2,4}[-/]\d{2}[-/]\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
_LEVEL = r"(?:ERROR|WARN|WARNING|INFO|DEBUG|FATAL|CRITICAL)"
# "25/12/06 10:00:00 ERROR ", "2026-01-01 10:00:00,123 featurize ERROR ", "2026-01-01 10:00:00 "
_LOG_PREFIX = re.compile(rf"^(?:{_TIMESTAMP}\s+)?(?:[\w.\-\[\]]+\s+)?{_LEVEL}\s+|^{_TIMESTAMP}\s+")


def _without_log_prefix(line: str) -> str:
    return _LOG_PREFIX.sub("", line.strip(), count=1)


def _last_traceback_error(lines: list[str]) -> str | None:
    """The exception line of the last Python traceback: the first line after its header that is
    not indented (frames and source lines are). A Py4JJavaError's real message is on the next
    line (': java.io.FileNotFoundException: ...'): it is kept on the same line."""
    starts = [i for i, line in enumerate(lines) if _TRACEBACK in line]
    if not starts:
        return None
    for i in range(starts[-1] + 1, len(lines)):
        line = lines[i]
        if not line.strip() or line[0] in " \t":
            continue
        error = _without_log_prefix(line)
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if following.startswith(": ") and error.startswith("py4j."):
            error = f"{error.rstrip('.')}{following}"
        return error
    return None


def error_line(text: str) -> str | None:
    """The job's own error line: `<job>: error: <message>` (exit status 2), else the exception
    line of the last Python traceback, else None. One line, log prefixes removed."""
    lines = text.splitlines()
    for line in reversed(lines):
        match = _JOB_ERROR.search(line)
        if match:
            return match.group(0).strip()
    return _last_traceback_error(lines)
