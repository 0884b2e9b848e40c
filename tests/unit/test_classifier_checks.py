"""fruits_spark.classifier_checks: what the split's label counts allow (no Spark session needed)."""

from __future__ import annotations

import pytest

from fruits_spark import classifier
from fruits_spark.classifier_checks import check_parts, grid_obstacle, label_warnings
from fruits_spark.runtime import JobError


def test_label_warnings_name_untested_and_unseen_labels():
    warnings = label_warnings({"Banana": 8, "Kiwi": 5, "Plum": 2}, {"Banana": 2, "Kiwi": 1, "Lime": 1})
    assert len(warnings) == 2
    assert "Plum" in warnings[0] and "test part" in warnings[0]
    assert "Lime" in warnings[1] and "cannot predict" in warnings[1]
    assert label_warnings({"Banana": 3}, {"Banana": 1})[0].startswith("only one label")
    assert label_warnings({"Banana": 3, "Kiwi": 2}, {"Banana": 1, "Kiwi": 1}) == []


def test_grid_is_skipped_only_when_the_validation_share_cannot_rank_it():
    two = {"fit": {"Banana": 4, "Kiwi": 3}, "validation": {"Kiwi": 1}, "test": {}}
    assert grid_obstacle(two, ["Banana", "Kiwi"]) is None
    assert "validation share is empty" in grid_obstacle({**two, "validation": {}}, ["Banana", "Kiwi"])
    assert "fit share has 1 label" in grid_obstacle({**two, "fit": {"Kiwi": 3}}, ["Banana", "Kiwi"])
    assert "single label" in grid_obstacle(two, ["Kiwi"])


def test_an_empty_side_of_the_split_ends_the_job_naming_its_share():
    check_parts({"Kiwi": 3}, {"Kiwi": 1}, 4, 20)
    with pytest.raises(
        JobError,
        match=r"^the training part is empty: none of the 2 labelled images hashes "
        r"into its 70% share",
    ):
        check_parts({}, {"Kiwi": 2}, 2, 30)
    with pytest.raises(JobError, match=r"^the test part is empty: .* its 20% share; add images"):
        check_parts({"Kiwi": 2}, {}, 2, 20)


def test_the_outputs_are_named_under_the_output_folder():
    uris = classifier.output_uris("s3://b/classifier/run=2")
    assert uris == {
        "model": f"s3://b/classifier/run=2/{classifier.MODEL}",
        "predictions": f"s3://b/classifier/run=2/{classifier.PREDICTIONS}",
        "metrics": f"s3://b/classifier/run=2/{classifier.METRICS}",
        "confusion_matrix": f"s3://b/classifier/run=2/{classifier.CONFUSION_PNG}",
    }
