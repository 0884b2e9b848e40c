"""Train and evaluate a fruit classifier on PCA vectors with Spark ML.

    spark-submit spark_jobs/classify.py (--vectors URI | --vectors-list URI) --pca-run ID --output URI \
        [--test-percent 20] [--validation-percent 25] [--reg-params 0.001,0.01,0.1] \
        [--elastic-net-params 0.0,0.5] [--max-iter 100] [--parallelism 2]

Reads the vectors pca.py wrote (path, label, pca_features array<double>): one dataset, or the
datasets a PCA run's vectors list names (every committed batch of its space), leaves out the rows
without a label (counted), and splits the rest by a hash of each image's path: a path's side
never changes when images are added (`fruits_spark.classifier`). On the training part:
  1. each regularisation setting of the grid is fitted on its "fit" share and scored (macro F1)
     on its "validation" share, both also chosen by path hash;
  2. the best setting is refitted on the whole training part: a multinomial logistic regression,
     classes weighted by their inverse frequency so that small classes count as much.
The test part is scored once, checked (every test row exactly once) and measured.
Writes under --output:
  model/                 Spark ML PipelineModel (label indexer, classifier, index -> label name)
  predictions/           parquet of the test rows: path, label, prediction, confidence
  metrics.json           accuracy, macro F1, majority baseline, confusion matrix, per-class
                         scores, the grid's validation scores, warnings, pca_run, ...
  confusion_matrix.png   the test part's confusion matrix, with the label names
"""

from __future__ import annotations

import argparse
import sys
import time

from fruits_spark import classifier, classifier_report, classifier_training, hadoop_fs
from fruits_spark.classifier import FIT, TEST, TRAINING_PARTS, VALIDATION, Setting
from fruits_spark.classifier_checks import check_parts, label_warnings
from fruits_spark.classifier_training import Split
from fruits_spark.runtime import JobError, create_session, exit_on_job_error, setup_logging, task_slots

JOB = "classify"

log = setup_logging(JOB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="classify.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vectors", help="PCA vectors parquet URI (pca.py's --output)")
    source.add_argument(
        "--vectors-list", help="text file naming the vector datasets to read, one a line (pca.py's vectors_list.txt)"
    )
    parser.add_argument("--pca-run", required=True, help="identifier of the PCA run, recorded in the metrics")
    parser.add_argument("--output", required=True, help="folder URI for the model, predictions, metrics and plot")
    parser.add_argument(
        "--test-percent",
        type=int,
        default=20,
        help="share of the images (by path hash) held out for the test (default 20)",
    )
    parser.add_argument(
        "--validation-percent",
        type=int,
        default=25,
        help="share of the training part (by path hash) that scores the grid (default 25)",
    )
    parser.add_argument(
        "--reg-params",
        default="0.001,0.01,0.1",
        help="regularisation strengths to try, comma-separated (default 0.001,0.01,0.1)",
    )
    parser.add_argument(
        "--elastic-net-params",
        default="0.0,0.5",
        help="L1 shares to try (0 = L2, 1 = L1), comma-separated (default 0.0,0.5)",
    )
    parser.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations at most (default 100)")
    parser.add_argument("--parallelism", type=int, default=2, help="grid fits run at once (default 2)")
    args = parser.parse_args(argv)
    for name in ("test_percent", "validation_percent"):
        if not 1 <= getattr(args, name) <= 99:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and 99")
    if args.max_iter < 1 or args.parallelism < 1:
        parser.error("--max-iter and --parallelism must be at least 1")
    if not args.pca_run.strip():
        parser.error("--pca-run must not be empty")
    reg_params = _floats(parser, "--reg-params", args.reg_params, lower=0.0, upper=None)
    elastic_net = _floats(parser, "--elastic-net-params", args.elastic_net_params, lower=0.0, upper=1.0)
    args.grid = [Setting(r, e) for r in reg_params for e in elastic_net]
    args.output = args.output.rstrip("/")
    return args


def _floats(parser, option: str, text: str, *, lower: float, upper: float | None) -> list[float]:
    """Distinct values of a comma-separated list, in the given order, each within the bounds."""
    try:
        values = list(dict.fromkeys(float(v) for v in text.split(",") if v.strip()))
    except ValueError:
        parser.error(f"{option} must be comma-separated numbers, got {text!r}")
    if not values:
        parser.error(f"{option} needs at least one value")
    if any(v < lower or (upper is not None and v > upper) for v in values):
        parser.error(f"{option} values must be in [{lower}, {'inf' if upper is None else upper}]")
    return values


def read_and_split(spark, args) -> Split:
    """Read and check the vectors, split the labelled rows, warn about what weakens the scores."""
    if args.vectors_list:
        if not hadoop_fs.exists(spark, args.vectors_list):
            raise JobError(f"vectors list not found: {args.vectors_list}")
        datasets = [line.strip() for line in hadoop_fs.read_text(spark, args.vectors_list).splitlines() if line.strip()]
        args.vectors = args.vectors_list  # what the metrics and messages name
    else:
        datasets = [args.vectors]
    frame = classifier.read_vectors(spark, datasets)
    stats = classifier.inspect(frame)
    dim = classifier.check(stats, args.vectors)
    labelled = stats.rows - stats.unlabelled
    log.info("%d vectors of %d values, %d labelled", stats.rows, dim, labelled)
    rows = classifier.prepare(frame, args.test_percent, args.validation_percent, labelled, task_slots(spark))
    counts = classifier.count_parts(rows)
    train, test = classifier.merge_counts(*(counts[p] for p in TRAINING_PARTS)), counts[TEST]
    check_parts(train, test, labelled, args.test_percent)
    warnings = [f"{stats.unlabelled} of {stats.rows} vectors have no label: left out"] if stats.unlabelled else []
    warnings += label_warnings(train, test)
    for warning in warnings:
        log.warning("%s", warning)
    log.info(
        "split: %d training images (%d fit, %d validation), %d test images, %d labels",
        sum(train.values()),
        sum(counts[FIT].values()),
        sum(counts[VALIDATION].values()),
        sum(test.values()),
        len(set(train) | set(test)),
    )
    return Split(stats, dim, rows, counts, train, test, warnings)


def score_test_part(spark, model, split: Split, paths: dict[str, str]) -> dict[tuple[str, str], int]:
    """Write the test rows' predictions, read them back and check them: {(label, prediction): rows}."""
    classifier.scored(model, split.rows.where(split.rows.part == TEST)).write.mode("overwrite").parquet(
        paths["predictions"]
    )
    return classifier.verify_predictions(spark.read.parquet(paths["predictions"]), sum(split.test.values()))


def build_metrics(args, split: Split, trained: dict, pairs: dict[tuple[str, str], int], paths: dict[str, str]) -> dict:
    stats, counts, train, test = split.stats, split.counts, split.train, split.test
    labels = sorted(set(train) | set(test))
    matrix = classifier_report.confusion_matrix(pairs, labels)
    measured = classifier_report.scores(matrix, labels)
    majority, baseline = classifier_report.majority_baseline(train, test)
    return {
        "pca_run": args.pca_run,
        "vectors": args.vectors,
        "input_rows": stats.rows,
        "labelled_rows": stats.rows - stats.unlabelled,
        "unlabelled_rows": stats.unlabelled,
        "features_dim": split.dim,
        "train_rows": sum(train.values()),
        "fit_rows": sum(counts[FIT].values()),
        "validation_rows": sum(counts[VALIDATION].values()),
        "test_rows": sum(test.values()),
        "split": {
            "test_percent": args.test_percent,
            "validation_percent": args.validation_percent,
            "rule": f"pmod(xxhash64('{classifier.TEST_SALT}', path), 100) < test_percent -> test, then "
            f"pmod(xxhash64('{classifier.VALIDATION_SALT}', path), 100) < validation_percent "
            "-> validation, else fit",
        },
        "labels": labels,
        "accuracy": measured["accuracy"],
        "macro_f1": measured["macro_f1"],
        "majority_label": majority,
        "majority_baseline": baseline,
        "confusion_matrix": matrix,
        "confusion_matrix_axes": "rows: true label, columns: predicted label, both in the order of labels",
        "per_class": measured["per_class"],
        "train_counts": dict(sorted(train.items())),
        "class_weights": dict(sorted(trained["weights"].items())),
        "regularisation": {**trained["setting"].as_dict(), "chosen_by": trained["chosen_by"]},
        "grid": trained["grid"],
        "max_iter": args.max_iter,
        "iterations": trained["iterations"],
        "warnings": split.warnings,
        "outputs": paths,
    }


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    spark = create_session("fruits-classify")  # Spark ML and SQL only: no Python workers, no package to ship
    paths = classifier.output_uris(args.output)
    split = read_and_split(spark, args)
    trained = classifier_training.train(split, args.grid, args.max_iter, args.parallelism)
    trained["model"].write().overwrite().save(paths["model"])
    pairs = score_test_part(spark, trained["model"], split, paths)
    split.rows.unpersist()

    metrics = build_metrics(args, split, trained, pairs, paths)
    classifier_report.check_consistency(metrics)
    title = (
        f"{metrics['test_rows']} test images: accuracy {metrics['accuracy']:.1%}, "
        f"macro F1 {metrics['macro_f1']:.3f} (baseline {metrics['majority_baseline']:.1%})"
    )
    hadoop_fs.write_bytes(
        spark,
        paths["confusion_matrix"],
        classifier_report.confusion_png(metrics["confusion_matrix"], metrics["labels"], title),
    )
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    hadoop_fs.write_bytes(spark, paths["metrics"], classifier_report.metrics_json(metrics))
    print_summary(metrics)
    return metrics


def print_summary(metrics: dict) -> None:
    regularisation = metrics["regularisation"]
    print(
        f"{JOB}: input_rows={metrics['input_rows']} unlabelled_rows={metrics['unlabelled_rows']} "
        f"train_rows={metrics['train_rows']} test_rows={metrics['test_rows']} labels={len(metrics['labels'])} "
        f"accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} "
        f"majority_baseline={metrics['majority_baseline']:.4f} reg_param={regularisation['reg_param']} "
        f"elastic_net_param={regularisation['elastic_net_param']} warnings={len(metrics['warnings'])} "
        f"seconds={metrics['seconds']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
