"""What the classifier job measures and tells people: scores, checks, metrics JSON, a plot.

Everything here works on small driver-side values (counts per (true label, predicted label)
pair), so it is plain Python and numpy: the job does the counting in Spark.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np

from fruits_spark.runtime import JobError


def confusion_matrix(pair_counts: dict[tuple[str, str], int], labels: list[str]) -> list[list[int]]:
    """Rows: true label, columns: predicted label, both in the order of `labels`."""
    position = {label: i for i, label in enumerate(labels)}
    unknown = {name for pair in pair_counts for name in pair} - position.keys()
    if unknown:
        raise JobError(f"consistency check failed: label(s) {sorted(unknown)} are not in the metrics' labels")
    matrix = [[0] * len(labels) for _ in labels]
    for (true, predicted), count in pair_counts.items():
        matrix[position[true]][position[predicted]] += int(count)
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 when nothing was counted (scikit-learn's zero_division=0)."""
    return numerator / denominator if denominator else 0.0


def scores(matrix: list[list[int]], labels: list[str]) -> dict:
    """Accuracy, macro F1 and per-class precision/recall/F1/support of a confusion matrix.

    The macro average runs over the labels with at least one true row: a label absent from the
    evaluated part has no recall to average (the job warns about it instead).
    """
    counts = np.asarray(matrix, dtype=np.int64).reshape(len(labels), len(labels))
    total = int(counts.sum())
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    per_class = {}
    for i, label in enumerate(labels):
        hits = int(counts[i, i])
        precision = _ratio(hits, predicted[i])
        recall = _ratio(hits, support[i])
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(support[i]),
        }
    present = [per_class[label]["f1"] for label in labels if per_class[label]["support"]]
    return {
        "accuracy": _ratio(int(np.trace(counts)), total),
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "per_class": per_class,
    }


def majority_baseline(train_counts: dict[str, int], test_counts: dict[str, int]) -> tuple[str, float]:
    """(the most frequent training label, the test accuracy of always predicting it).

    The floor any classifier must beat (scikit-learn's DummyClassifier "most_frequent"); ties
    go to the first label alphabetically, so the figure does not depend on reading order.
    """
    majority = min(train_counts, key=lambda label: (-train_counts[label], label))
    return majority, _ratio(test_counts.get(majority, 0), sum(test_counts.values()))


def balanced_weights(label_counts: dict[str, int]) -> dict[str, float]:
    """rows / (labels x rows of the label) per label: every label weighs the same in the fit.

    scikit-learn's class_weight="balanced"; all 1.0 when the labels are balanced.
    """
    rows, labels = sum(label_counts.values()), len(label_counts)
    return {label: rows / (labels * count) for label, count in label_counts.items()}


def check_consistency(metrics: dict) -> None:
    """Fail loudly when the numbers contradict each other: a bug, never a reportable result."""
    matrix, labels, test_rows = metrics["confusion_matrix"], metrics["labels"], metrics["test_rows"]
    problems = []
    if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
        problems.append(f"the confusion matrix is not {len(labels)} x {len(labels)}")
    elif sum(map(sum, matrix)) != test_rows:
        problems.append(f"the confusion matrix sums to {sum(map(sum, matrix))}, not to the {test_rows} test rows")
    if metrics["train_rows"] + metrics["test_rows"] != metrics["labelled_rows"]:
        problems.append("train_rows + test_rows != labelled_rows")
    values = {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "majority_baseline": metrics["majority_baseline"],
    }
    for label, entry in metrics["per_class"].items():
        values.update({f"{label} {key}": entry[key] for key in ("precision", "recall", "f1")})
    problems += [
        f"{name} = {value} is not in [0, 1]"
        for name, value in values.items()
        if not (math.isfinite(value) and 0.0 <= value <= 1.0)
    ]
    supports = [metrics["per_class"][label]["support"] for label in labels]
    if not problems and supports != [sum(row) for row in matrix]:
        problems.append("per-class supports differ from the confusion matrix's rows")
    if problems:
        raise JobError("consistency check failed: " + "; ".join(problems))


def metrics_json(metrics: dict) -> bytes:
    return (json.dumps(metrics, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def confusion_png(matrix: list[list[int]], labels: list[str], title: str) -> bytes:
    """Heat map of the confusion matrix, coloured by each true label's share, counts written in.

    Colouring by row share keeps small classes readable next to large ones; the counts are
    written in the cells while they stay legible (up to 30 labels).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=float).reshape(len(labels), len(labels))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    side = min(max(5.0, 0.45 * len(labels) + 3.0), 40.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true label's rows")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    if len(labels) <= 30:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                ax.text(
                    column,
                    row,
                    f"{int(count)}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if shares[row, column] > 0.5 else "black",
                )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
