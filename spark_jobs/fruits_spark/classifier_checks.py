"""What the split's label counts allow, said in plain words (pure Python).

An empty side ends the job (`check_parts`); labels missing from one side make the scores less
telling than they look (`label_warnings`); the grid is ranked on the validation share only when
that share can compare settings (`grid_obstacle`).
"""

from __future__ import annotations

from fruits_spark.classifier import FIT, VALIDATION
from fruits_spark.runtime import JobError


def check_parts(train: dict[str, int], test: dict[str, int], labelled: int, test_percent: int) -> None:
    """A JobError when either side of the split is empty: too few images to train or to test."""
    for name, counts, percent in (("training", train, 100 - test_percent), ("test", test, test_percent)):
        if not counts:
            raise JobError(
                f"the {name} part is empty: none of the {labelled} labelled images hashes into "
                f"its {percent}% share; add images (or change --test-percent)"
            )


def label_warnings(train: dict[str, int], test: dict[str, int]) -> list[str]:
    """What makes the scores less telling than they look, said in plain words."""
    warnings = []
    if len(train) == 1:
        [only] = train
        warnings.append(
            f"only one label in the training part ({only}): the classifier predicts it for every "
            "image; add images of other labels"
        )
    untested = sorted(set(train) - set(test))
    if untested:
        warnings.append(
            f"label(s) {', '.join(untested)} have no image in the test part: their precision "
            "and recall are not measured (not in macro_f1)"
        )
    unseen = sorted(set(test) - set(train))
    if unseen:
        warnings.append(
            f"label(s) {', '.join(unseen)} appear only in the test part "
            f"({sum(test[label] for label in unseen)} images): the classifier cannot predict them"
        )
    return warnings


def grid_obstacle(counts: dict[str, dict[str, int]], labels: list[str]) -> str | None:
    """Why the validation share cannot rank the grid, or None when it can."""
    if len(labels) < 2:
        return "a single label: nothing to compare"
    if len(counts[FIT]) < 2:
        return f"the fit share has {len(counts[FIT])} label(s)"
    if not counts[VALIDATION]:
        return "the validation share is empty"
    return None
