"""The trigger form's Params are validated where they enter (issue #18, finding 8): by their JSON
schema when a run is created (Airflow validates the conf against it), and in code
(fruits.params.check_run_params) for what a schema cannot say and for runs whose conf bypassed it."""

from __future__ import annotations

import re

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError

from fruits import params
from fruits.backends import emr, local
from fruits.settings import Settings

GOOD = {
    "bucket": "fruits",
    "landing_prefix": "landing/",
    "weights": "imagenet",
    "image_size": 224,
    "pca_k": None,
    "pca_variance": 0.95,
    "sensor_timeout": 3600,
}
BAD_BUCKETS = [
    "Fruits",
    "fr",
    "a" * 64,
    "-fruits",
    "fruits-",
    "fru..its",
    "fru_its",
    "192.168.1.10",
    "xn--fruits",
    "sthree-fruits",
    "fruits-s3alias",
    "fruits--ol-s3",
    "s3://fruits",
    "fruits/landing",
]
BAD_WEIGHTS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "file:///etc/passwd",
    "/etc/passwd",
    "ImageNet",
    "s3://",
    "s3://other bucket/w.h5",
    "",
]


def form(backend=local, settings: Settings | None = None) -> ParamsDict:
    return ParamsDict(params.for_dag(settings or Settings(), backend))


def refused_by_the_schema(name: str, value, backend=local) -> bool:
    values = form(backend)
    try:
        values[name] = value
        values.validate()
    except ParamValidationError:
        return True
    return False


def refused_in_code(changes: dict, settings: Settings | None = None, backend=local) -> str | None:
    try:
        params.check_run_params({**GOOD, **changes}, settings or Settings(), backend)
    except params.InvalidParams as exc:
        return str(exc)
    return None


def test_the_defaults_pass_both_checks():
    assert form().validate()["bucket"] == "fruits"
    assert refused_in_code({}) is None
    assert refused_in_code({"bucket": "my.fruits-2026", "weights": "s3://my.fruits-2026/models/w.weights.h5"}) is None


@pytest.mark.parametrize("bucket", BAD_BUCKETS)
def test_bucket_names_follow_the_s3_naming_rules(bucket):
    assert refused_by_the_schema("bucket", bucket)
    assert "not a valid S3 bucket name" in refused_in_code({"bucket": bucket})


@pytest.mark.parametrize("weights", BAD_WEIGHTS)
def test_weights_are_imagenet_none_or_an_s3_uri(weights):
    assert refused_by_the_schema("weights", weights)
    assert "must be `imagenet`, `none` or an s3://" in refused_in_code({"weights": weights})


def test_weights_in_another_bucket_only_when_the_deployment_allows_it(monkeypatch):
    other = "s3://someone-elses-bucket/models/w.weights.h5"
    assert not refused_by_the_schema("weights", other)  # the schema cannot know the run's bucket
    assert "neither the run's bucket nor one of FRUITS_WEIGHTS_BUCKETS" in refused_in_code({"weights": other})
    assert refused_in_code({"weights": "s3://fruits/models/w.weights.h5"}) is None
    monkeypatch.setenv("FRUITS_WEIGHTS_BUCKETS", "shared-models, someone-elses-bucket")
    assert refused_in_code({"weights": other}, Settings()) is None


@pytest.mark.parametrize(
    "pca_k, refused", [(1280, False), (1, False), (None, False), (1281, True), (100000, True), (0, True)]
)
def test_pca_k_is_at_most_the_feature_size(pca_k, refused):
    assert refused_by_the_schema("pca_k", pca_k) == refused
    assert (refused_in_code({"pca_k": pca_k}) is not None) == refused


@pytest.mark.parametrize("backend", [local, emr])
def test_the_sensor_timeout_stays_below_the_run_timeout(backend):
    settings = Settings()
    longest = params.max_sensor_timeout(settings, backend)
    assert 0 < longest < settings.run_timeout
    assert not refused_by_the_schema("sensor_timeout", longest, backend)
    assert refused_by_the_schema("sensor_timeout", longest + 1, backend)
    assert refused_by_the_schema("sensor_timeout", settings.run_timeout, backend)
    assert "sensor_timeout" in refused_in_code({"sensor_timeout": longest + 1}, settings, backend)
    assert refused_in_code({"sensor_timeout": longest}, settings, backend) is None


def test_the_emr_backend_keeps_time_for_its_cluster_and_teardown():
    settings = Settings()
    assert params.max_sensor_timeout(settings, emr) == settings.run_timeout - emr.reserved_seconds(settings)
    assert params.max_sensor_timeout(settings, emr) < params.max_sensor_timeout(settings, local)


def test_a_default_sensor_timeout_the_run_cannot_afford_is_a_parse_error(monkeypatch):
    monkeypatch.setenv("FRUITS_SENSOR_TIMEOUT", "86400")
    with pytest.raises(params.InvalidParams, match="FRUITS_SENSOR_TIMEOUT=86400s leaves the run too little time"):
        params.for_dag(Settings(), emr)


def test_every_problem_is_reported_at_once():
    message = refused_in_code({"bucket": "Bad", "pca_k": 5000, "sensor_timeout": 10**7})
    assert message.startswith("invalid run parameters:")
    assert "bucket 'Bad'" in message and "pca_k 5000" in message and "sensor_timeout 10000000" in message


@pytest.mark.parametrize(
    "values, message",
    [
        ({"pca_refit": "sometimes"}, "pca_refit 'sometimes' must be one of auto, always, never"),
        ({"pca_refit_angle": 0}, "pca_refit_angle 0 must be a number of degrees above 0"),
        ({"pca_refit_angle": 120.0}, "at most 90"),
    ],
)
def test_the_refit_policy_params_are_checked(values, message):
    good = {"bucket": "fruits", "weights": "none", "pca_k": None, "sensor_timeout": 0}
    with pytest.raises(params.InvalidParams, match=re.escape(message)):
        params.check_run_params({**good, **values}, Settings())
    params.check_run_params({**good, "pca_refit": "always", "pca_refit_angle": 5.0}, Settings())


# fruits_classifier's form: the same bucket rules, the same kind of error, every problem at once.


def classifier_form(backend=local) -> ParamsDict:
    return ParamsDict(params.for_classifier(Settings(), backend))


def refused_by_the_classifier_schema(name: str, value) -> bool:
    values = classifier_form()
    try:
        values[name] = value
        values.validate()
    except ParamValidationError:
        return True
    return False


def refused_in_the_classifiers_code(changes: dict) -> str | None:
    try:
        params.check_classifier_params({"bucket": "fruits", "pca_run_id": "", **changes})
    except params.InvalidParams as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("backend", [local, emr])
def test_the_classifier_defaults_pass_both_checks(backend):
    form_values = classifier_form(backend).validate()
    assert form_values["bucket"] == "fruits" and form_values["pca_run_id"] == ""
    assert refused_in_the_classifiers_code({}) is None
    assert ("region" in form_values) == (backend is emr)


@pytest.mark.parametrize("bucket", BAD_BUCKETS)
def test_the_classifier_bucket_follows_the_same_naming_rules(bucket):
    assert refused_by_the_classifier_schema("bucket", bucket)
    assert "not a valid S3 bucket name" in refused_in_the_classifiers_code({"bucket": bucket})


@pytest.mark.parametrize(
    "run_id",
    [
        "",
        "manual__2026-01-01T00:00:00+00:00",
        "scheduled__2026-03-01T10:00:00+00:00",
        "asset_triggered__2026-03-01T10:00:00.123456+00:00_AbCd1234",
        "my.run~1",
    ],
)
def test_pca_run_id_takes_airflow_run_ids(run_id):
    assert not refused_by_the_classifier_schema("pca_run_id", run_id)
    assert refused_in_the_classifiers_code({"pca_run_id": run_id}) is None


@pytest.mark.parametrize("run_id", ["../pca/run=x", "two words", "run\nid", "x" * 251, "s3://fruits/pca/"])
def test_pca_run_id_refuses_anything_else(run_id):
    assert refused_by_the_classifier_schema("pca_run_id", run_id)
    assert "must be empty or a fruits_pipeline run id" in refused_in_the_classifiers_code({"pca_run_id": run_id})


def test_the_classifier_reports_every_problem_at_once_like_the_pipeline():
    message = refused_in_the_classifiers_code({"bucket": "Bad", "pca_run_id": "a b"})
    assert message.startswith("invalid run parameters:")
    assert "bucket 'Bad'" in message and "pca_run_id 'a b'" in message
