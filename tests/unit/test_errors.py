"""What no retry can fix fails at once, and nothing else does (fruits/errors.py): every refusal,
guard and schema error is a PermanentError, the one retry policy fails those and lets every other
exception (a bug's ValueError, a network error) take the task's retries."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk import RetryAction
from airflow.sdk.exceptions import AirflowException

from fruits import errors, spark_s3a
from fruits.backends.emr import budget, code, limits, region, wheelhouse
from fruits.core import classification, ledger, manifest, planning, validation
from fruits.params import InvalidParams

ROOT = Path(__file__).resolve().parents[2]

# Each error a hand-written AirflowFailException block (or _fail_fast) used to catch, with the
# base it had then: code and users matching it that way keep working.
FORMERLY_CAUGHT_ONE_BY_ONE = [
    (InvalidParams, ValueError),  # the pipeline's Params, check_region
    (region.RegionNotAllowed, ValueError),  # check_region
    (limits.LimitExceeded, ValueError),  # check_region, cluster_spec
    (budget.RunTimeoutTooShort, ValueError),  # cluster_spec, classifier_spec
    (code.CodeMismatch, RuntimeError),  # upload_code
    (wheelhouse.WheelhouseNotReady, RuntimeError),  # upload_code
    (validation.ValidationError, Exception),  # validate
    (classification.ClassifierError, Exception),  # choose_pca_run, validate_classifier
    (ledger.LedgerError, RuntimeError),  # _fail_fast
    (manifest.ManifestError, ValueError),  # _fail_fast (any ValueError)
    (planning.InvalidLandingPrefix, ValueError),  # _fail_fast (any ValueError)
    (spark_s3a.S3AJarsMissing, RuntimeError),
]


def decision(exc: BaseException) -> RetryAction:
    return errors.retry_policy().evaluate(exc, try_number=1, max_tries=3).action


@pytest.mark.parametrize("error, old_base", FORMERLY_CAUGHT_ONE_BY_ONE, ids=lambda c: c.__name__)
def test_every_refusal_guard_and_schema_error_is_permanent_and_keeps_its_old_base(error, old_base):
    assert issubclass(error, errors.PermanentError) and issubclass(error, old_base)
    assert decision(error("refused")) is RetryAction.FAIL
    assert str(error("the message users match")) == "the message users match"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        KeyError("bucket"),
        RuntimeError("boom"),
        ConnectionError("reset by peer"),
        OSError("no space left"),
        AirflowException("spark-submit failed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_other_error_takes_the_tasks_retries(exc):
    assert decision(exc) is RetryAction.DEFAULT


def test_a_bad_landing_prefix_is_permanent_but_other_planning_value_errors_are_not():
    with pytest.raises(errors.PermanentError, match="must not be empty"):
        planning.normalise_prefix(" / ")
    with pytest.raises(planning.InvalidLandingPrefix, match="overlaps the pipeline's output prefix"):
        planning.normalise_prefix("state")
    assert planning.normalise_prefix("landing") == "landing/"


def test_the_mapping_to_airflow_is_in_one_place():
    """No hand-written AirflowFailException left in the pipeline's code: a permanent error is raised
    as itself and mapped by errors.retry_policy (the EMR step sensor's own failure is an operator's)."""
    found = {
        str(path.relative_to(ROOT))
        for folder in ("fruits", "dags", "plugins")
        for path in (ROOT / folder).rglob("*.py")
        if "AirflowFailException" in path.read_text(encoding="utf-8")
    }
    assert found == {"fruits/backends/emr/sensors.py"}
    users = {
        str(path.relative_to(ROOT))
        for folder in ("fruits", "dags")
        for path in (ROOT / folder).rglob("*.py")
        if "errors.retry_policy()" in path.read_text(encoding="utf-8")
    }
    assert users == {"dags/fruits_pipeline.py", "dags/fruits_classifier.py"}
