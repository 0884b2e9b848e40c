"""Errors no retry can fix, and the one place Airflow learns it.

The rule: an error that says the input, the deployment or the data is wrong (a refused Param,
region or cluster limit, a guard, a ledger or manifest off its schema, outputs that fail
validation, code that changed under a version, a wheelhouse that was never built) derives from
`PermanentError`; the same task would fail the same way on every retry, so it fails at once.
Every other exception (a network error, an S3 throttle, a plain ValueError from a bug) is an
ordinary task failure, retried as the task's `retries` say.

The classes stay where they are raised and keep their names, messages and older bases
(`InvalidParams` is still a ValueError), so callers matching them are unchanged. `retry_policy()`
is the only mapping to Airflow: both DAGs put it in their default_args, so it covers every task
of theirs, backend tasks included.
"""

from __future__ import annotations


class PermanentError(Exception):
    """No retry can fix this: the task fails at once (see the module's rule)."""


def retry_policy():
    """The Airflow retry policy of every task: a PermanentError fails the task without using its
    retries; any other exception falls through to the task's own retries."""
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule  # Airflow only where tasks are defined

    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=PermanentError, action=RetryAction.FAIL, reason="a permanent error: no retry can fix it"
            )
        ]
    )
