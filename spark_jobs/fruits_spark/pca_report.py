"""Choosing k, and what the PCA job tells people: a JSON report and two plots."""

from __future__ import annotations

import io
import json

import numpy as np


def smallest_k_for_variance(ratios: list[float], target: float) -> int:
    """Smallest k whose cumulative explained variance reaches `target` (0 < target <= 1)."""
    cumulative = np.cumsum(ratios)
    reached = np.nonzero(cumulative >= target - 1e-12)[0]
    return int(reached[0]) + 1 if len(reached) else len(ratios)


def build_report(
    *,
    rows: int,
    input_dim: int,
    k: int,
    ratios: list[float],
    inputs: list[str],
    output: str,
    model: str,
    target_variance: float | None,
    labels: int,
    seconds: float,
    plots: dict[str, str],
) -> dict:
    ratios = [float(r) for r in ratios[:k]]
    cumulative = [float(c) for c in np.cumsum(ratios)]
    return {
        "rows": rows,
        "input_dim": input_dim,
        "k": k,
        "target_variance": target_variance,
        "explained_variance": ratios,
        "cumulative_explained_variance": cumulative,
        "explained_variance_total": cumulative[-1] if cumulative else 0.0,
        "labels": labels,
        "inputs": inputs,
        "output": output,
        "model": model,
        "plots": plots,
        "seconds": round(seconds, 2),
    }


def report_json(report: dict) -> bytes:
    return (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def scree_png(ratios: list[float], *, target: float | None = None, shown: int | None = None) -> bytes:
    """Bars of each component's explained variance and the cumulative curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = np.asarray(ratios, dtype=float)
    k_chosen = len(ratios) if shown is None else shown
    n = min(len(ratios), max(k_chosen + 10, 20))
    x = np.arange(1, n + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar(x, ratios[:n], color=["#2a7ab0" if i <= k_chosen else "#b8cfe0" for i in x], label="per component")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax2 = ax.twinx()
    ax2.plot(x, np.cumsum(ratios)[:n], color="#d9534f", marker=".", label="cumulative")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("cumulative")
    if target is not None:
        ax2.axhline(target, color="#d9534f", linestyle=":", linewidth=1)
    ax.set_title(f"Scree plot: k = {k_chosen}, {np.cumsum(ratios)[k_chosen - 1]:.1%} of the variance")
    fig.tight_layout()
    png = _figure_png(fig)
    plt.close(fig)
    return png


UNLABELLED = "(no label)"


def scatter_png(points: np.ndarray, labels: list[str], ratios: list[float]) -> bytes:
    """First two components, one colour per label (legend when there are few labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    labels = [UNLABELLED if label is None else label for label in labels]  # images right under the landing prefix
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(names) <= 20 else "turbo", max(len(names), 1))
    label_array = np.asarray(labels, dtype=object)
    y = points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))
    for i, name in enumerate(names):
        mask = label_array == name
        ax.scatter(points[mask, 0], y[mask], s=10, alpha=0.7, color=cmap(i), label=name)
    ax.set_xlabel(f"PC1 ({ratios[0]:.1%})" if ratios else "PC1")
    ax.set_ylabel(f"PC2 ({ratios[1]:.1%})" if len(ratios) > 1 else "(k = 1)")
    ax.set_title(f"PCA of image features: {len(points):,} images, {len(names)} labels")
    if len(names) <= 20:
        ax.legend(fontsize=7, markerscale=1.5, loc="best", frameon=False)
    fig.tight_layout()
    png = _figure_png(fig)
    plt.close(fig)
    return png
