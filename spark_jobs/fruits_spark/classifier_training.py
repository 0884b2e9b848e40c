"""The classify job's training: the regularisation chosen on the validation share, then one fit
of the whole training part, classes weighted by their inverse frequency."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fruits_spark import classifier, classifier_report
from fruits_spark.classifier import FIT, TRAINING_PARTS, VALIDATION, Setting
from fruits_spark.classifier_checks import grid_obstacle

log = logging.getLogger(__name__)


@dataclass
class Split:
    """The labelled rows (cached, with their part) and what the job counted on the way."""

    stats: classifier.InputStats
    dim: int
    rows: object  # DataFrame: path, label, features (vector), part
    counts: dict[str, dict[str, int]]
    train: dict[str, int]
    test: dict[str, int]
    warnings: list[str]


def choose_setting(
    indexed, counts: dict[str, dict[str, int]], labels: list[str], grid: list[Setting], max_iter: int, parallelism: int
) -> tuple[Setting, str, list[dict]]:
    """(setting, how it was chosen, the grid's validation scores): the grid's best on the
    validation share, or the fallback when that share cannot score it."""
    reason = grid_obstacle(counts, labels)
    if reason:
        fallback = classifier.fallback_setting(grid)
        log.warning(
            "grid not evaluated (%s): regParam=%s elasticNetParam=%s",
            reason,
            fallback.reg_param,
            fallback.elastic_net_param,
        )
        return fallback, f"fallback (strongest regularisation of the grid): {reason}", []
    fit_part = classifier.with_weights(
        indexed.where(indexed.part == FIT), classifier_report.balanced_weights(counts[FIT])
    )
    phase = time.perf_counter()
    results = classifier.evaluate_grid(
        fit_part, indexed.where(indexed.part == VALIDATION), grid, max_iter, labels, parallelism
    )
    for r in results:
        log.info(
            "regParam=%s elasticNetParam=%s: validation macro F1 %.4f, accuracy %.4f (%d iterations)",
            r["reg_param"],
            r["elastic_net_param"],
            r["validation_macro_f1"],
            r["validation_accuracy"],
            r["iterations"],
        )
    best = classifier.best_setting(results)
    log.info(
        "grid of %d settings scored in %.1f s: regParam=%s elasticNetParam=%s",
        len(results),
        time.perf_counter() - phase,
        best.reg_param,
        best.elastic_net_param,
    )
    return best, "best validation macro F1 (ties: stronger regularisation)", results


def train(split: Split, grid: list[Setting], max_iter: int, parallelism: int) -> dict:
    """Pick the regularisation, refit on the whole training part, assemble the PipelineModel.
    A grid that could not be ranked adds a warning to `split.warnings`."""
    training = split.rows.where(split.rows.part.isin(*TRAINING_PARTS))
    indexer = classifier.fit_indexer(training)
    indexed = indexer.transform(training)
    labels = list(indexer.labelsArray[0])
    setting, chosen_by, scores = choose_setting(indexed, split.counts, labels, grid, max_iter, parallelism)
    obstacle = grid_obstacle(split.counts, labels)
    if obstacle and len(labels) > 1:  # a single label is warned about already
        split.warnings.append(f"grid not evaluated ({obstacle}): the strongest regularisation of the grid is used")
    weights = classifier_report.balanced_weights(split.train)
    if len(set(weights.values())) > 1:
        log.info("unbalanced labels: class weights from %.3f to %.3f", min(weights.values()), max(weights.values()))
    phase = time.perf_counter()
    fitted = classifier.fit_logistic_regression(classifier.with_weights(indexed, weights), setting, max_iter)
    iterations = fitted.summary.totalIterations if fitted.hasSummary else 0
    log.info("fitted on the training part in %.1f s (%d iterations)", time.perf_counter() - phase, iterations)
    return {
        "model": classifier.pipeline_model(indexer, fitted),
        "setting": setting,
        "chosen_by": chosen_by,
        "grid": scores,
        "weights": weights,
        "iterations": iterations,
    }
