"""PCA of image features on Spark, projected exactly like classical (centred) PCA, incrementally.

    spark-submit spark_jobs/pca.py (--features URI[,URI...] | --features-list URI) --output URI \
        (--k N | --variance 0.95) --report PATH_OR_URI [--model URI] [--solver batched|spark-ml] \
        [--previous URI] [--history-list URI] [--refit auto|always|never] [--refit-angle 10] \
        [--space-id ID] [--allow-empty]

`--features` are the new data. With `--previous` (the folder of the previous run's state: see
`fruits_spark.pca_state`), the job scans only them:
  1. one scan checks every new vector and computes the moments (row count, mean, scatter) of the
     contents not fitted before (sha256: a content counts once), one matrix product per Arrow
     batch (`fruits_spark.moments`); merged exactly with the previous cumulative moments, they
     are the moments of all the data. The driver eigendecomposes the d x d covariance;
  2. the refit policy (`pca_state.decide`) compares the current basis with the new top-k
     subspace: when it moved less than `--refit-angle` degrees, only the new batch is projected
     with the current basis (same space as every committed vector); otherwise (or no model yet,
     k changed, `--refit always`) every dataset of `--history-list` plus the new ones is
     re-projected on the new components, into a new space.
Without `--previous` the history is part of the scan (a fit from scratch). `--solver spark-ml`
fits Spark ML's `PCA` instead (from scratch only): same result, much slower.
Writes:
  --output  parquet partitioned by batch: <output>/batch=<id>/ (path, label, pca_features
            array<double>, k) for every batch projected by this run
  --model   the space's Spark ML PipelineModel (centring + PCA), default `<output>_model`
  --report  JSON (rows, input_dim, k, explained_variance, refit decision and angle, ...) with
            `<report>_scree.png` and `<report>_scatter.png` beside it, and in the same folder
            the state of the next run: moments.npz, basis.npz, contents.bin, vectors_list.txt
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import numpy as np

from fruits_spark import hadoop_fs, pca_fit, pca_model, pca_outputs, pca_report, pca_state
from fruits_spark.pca_inputs import Previous, read_features, read_list, read_previous
from fruits_spark.runtime import (
    JobError,
    create_session,
    exit_on_job_error,
    setup_logging,
    ship_package,
    unless_submitted,
)

JOB = "pca"

log = setup_logging(JOB)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pca.py", description=__doc__.split("\n\n")[0])
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--features", help="the new features parquet URI(s), comma-separated")
    inputs.add_argument("--features-list", help="text file listing the new features parquet URIs, one per line")
    parser.add_argument("--output", required=True, help="PCA vectors parquet URI (partitioned by batch)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--k", type=int, help="number of components")
    size.add_argument(
        "--variance", type=float, help="smallest k reaching this cumulative explained variance (default 0.95)"
    )
    parser.add_argument("--report", required=True, help="report JSON path or URI (the state files go beside it)")
    parser.add_argument("--model", help="where to save the space's model (default <output>_model)")
    parser.add_argument(
        "--solver",
        choices=["batched", "spark-ml"],
        default="batched",
        help="batched: covariance from one matrix product per Arrow batch (default); "
        "spark-ml: Spark ML's PCA.fit, slower, same result (fits from scratch only)",
    )
    parser.add_argument("--previous", help="folder of the previous run's state (its report's folder)")
    parser.add_argument(
        "--history-list", help="text file listing every committed batch's features URI; read only to refit"
    )
    parser.add_argument(
        "--refit",
        choices=pca_state.REFIT_CHOICES,
        default="auto",
        help="auto: refit when the policy says so (default); always; never",
    )
    parser.add_argument(
        "--refit-angle",
        type=float,
        default=pca_state.DEFAULT_REFIT_ANGLE,
        help="refit when the top-k subspace moved more than this many degrees (default 10)",
    )
    parser.add_argument("--space-id", help="the id of the new space if this run refits (default: random)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the scatter-plot sample")
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="with 0 rows fitted so far, write empty outputs and a k=0 report instead of failing "
        "(a pipeline whose images were all rejected so far)",
    )
    args = parser.parse_args(argv)
    if args.k is None and args.variance is None:
        args.variance = 0.95
    if args.k is not None and args.k < 1:
        parser.error("--k must be at least 1")
    if args.variance is not None and not 0.0 < args.variance <= 1.0:
        parser.error("--variance must be in (0, 1]")
    if not 0.0 <= args.refit_angle <= 90.0:
        parser.error("--refit-angle must be in [0, 90]")
    if args.features is not None:
        args.features = [u.strip() for u in args.features.split(",") if u.strip()]
        if not args.features:
            parser.error("--features needs at least one URI")
    args.output = args.output.rstrip("/")
    args.model = args.model or args.output + "_model"
    args.space_id = args.space_id or f"space-{uuid.uuid4().hex[:12]}"
    args.state_dir = args.report.rsplit("/", 1)[0] if "/" in args.report else "."
    return args


def read_inputs(spark, args) -> tuple[Previous | None, list[str], object, object]:
    """(previous state, history datasets, the new data, what the scan reads): without a previous
    state the history is fitted too (from scratch); with one, only the new data."""
    if args.features_list:
        args.features = read_list(spark, args.features_list, "features list")
    previous = read_previous(spark, args.previous)
    history = read_list(spark, args.history_list, "history list", allow_empty=True) if args.history_list else []
    history = [uri for uri in history if uri.rstrip("/") not in {u.rstrip("/") for u in args.features}]
    if previous is not None and args.solver == "spark-ml":
        raise JobError("--solver spark-ml fits from scratch: it cannot be combined with --previous")
    new = read_features(spark, args.features)
    scanned = new if previous is not None or not history else read_features(spark, history + args.features)
    return previous, history, new, scanned


def choose_space(
    spark, args, previous: Previous | None, history: list[str], new, scanned, merged, spectrum, components
) -> tuple[pca_state.Decision, pca_state.Basis, object, list[str]]:
    """(decision, basis, rows to project, vector datasets kept): a new space re-projects every
    batch, the current one only the new batch, listed after the committed ones."""
    current = previous.basis if previous is not None else None
    try:
        decision = pca_state.decide(
            current=current,
            covariance=merged.covariance(),
            ratios=spectrum,
            components=components,
            k_requested=args.k,
            variance_target=args.variance,
            requested=args.refit,
            threshold_degrees=args.refit_angle,
        )
    except pca_state.PolicyError as exc:
        raise JobError(str(exc)) from None
    log.info("%s: %s", "refit" if decision.refit else "project only", decision.reason)
    if decision.refit and previous is not None and previous.rows and not args.history_list:
        raise JobError(f"a refit re-projects every committed batch ({decision.reason}): --history-list is needed")
    if not decision.refit:
        return decision, current, new, list(previous.vectors)
    basis = pca_state.Basis(args.space_id, merged.mean, np.ascontiguousarray(components[:, : decision.k]))
    # every batch re-projected, read again only when not just scanned
    return decision, basis, scanned if previous is None else read_features(spark, history + args.features), []


def write_empty(spark, args, started: float, merged, contents: np.ndarray) -> dict:
    """Empty vectors and a k=0 report: nothing to fit yet, and that is not an error."""
    spark.createDataFrame([], pca_model.PROJECTED_SCHEMA).write.mode("overwrite").parquet(args.output)
    pca_outputs.write_state(spark, args.state_dir, merged, None, contents, [])
    report = pca_report.build_report(
        rows=0,
        input_dim=0,
        k=0,
        ratios=[],
        inputs=args.features,
        output=args.output,
        model=None,
        target_variance=args.variance,
        labels=0,
        seconds=time.perf_counter() - started,
        plots={},
    )
    report.update(
        mode="refit",
        space_id=None,
        vectors_list=f"{args.state_dir}/{pca_state.VECTORS_LIST}",
        new_rows=0,
        fitted_rows=0,
        duplicates_skipped=0,
        projected_batches={},
        refit=None,
    )
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    print(
        f"{JOB}: rows=0 input_dim=0 k=0 explained_variance_total=0.0000 mode=refit seconds={report['seconds']}",
        flush=True,
    )
    return report


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    spark = create_session("fruits-pca", unless_submitted(pca_model.SESSION_DEFAULTS))
    # The Arrow functions run in Spark's Python workers. No warm-up job (featurize.py has one):
    # here it only competes with the first scan for the task slots (slower in A/B runs).
    ship_package(spark)
    previous, history, new, scanned = read_inputs(spark, args)

    index = previous.contents if previous is not None else pca_state.empty_digests()
    scan = pca_fit.scan(
        spark, scanned, index, len(args.features) if previous is not None else len(history) + len(args.features)
    )
    if scan.stats.rows:
        pca_fit.check(scan.stats)
    merged = previous.moments.merge(scan.stats) if previous is not None else scan.stats
    contents = pca_state.union(index, scan.new_contents)
    if not merged.rows and args.allow_empty:
        log.info("no features rows yet: writing empty outputs (--allow-empty)")
        return write_empty(spark, args, started, merged, contents)
    rows_fitted, dim = pca_fit.check(merged)
    log.info("%d distinct contents of %d features fitted so far (%d new)", rows_fitted, dim, scan.stats.rows)
    if args.k is not None and args.k > dim:
        raise JobError(f"--k {args.k} is larger than the feature dimension {dim}")
    spectrum, components = pca_fit.fit(scan.frame, merged, args.solver)
    decision, basis, projected_frame, kept_lists = choose_space(
        spark, args, previous, history, new, scanned, merged, spectrum, components
    )
    k = basis.k
    ratios = pca_state.captured_ratios(basis.components, merged.covariance()).tolist()
    log.info("%d components keep %.4f of the variance", k, sum(ratios))

    order = [pca_state.batch_id_of(uri, "input") for uri in (history if decision.refit else []) + args.features]
    batches, plots = pca_outputs.write_space(
        spark,
        projected_frame,
        basis,
        ratios,
        spectrum,
        order,
        output=args.output,
        model=args.model,
        report=args.report,
        variance=args.variance,
        seed=args.seed,
    )

    projected_rows = sum(batches.values())
    vectors = kept_lists + [f"{args.output}/batch={b}/" for b in batches]
    state_files = pca_outputs.write_state(spark, args.state_dir, merged, basis, contents, vectors)
    rows = projected_rows if decision.refit else previous.rows + projected_rows
    report = pca_report.build_report(
        rows=rows,
        input_dim=dim,
        k=k,
        ratios=ratios,
        inputs=args.features,
        output=args.output,
        model=args.model,
        target_variance=args.variance,
        labels=len(scan.stats.labels),
        seconds=time.perf_counter() - started,
        plots=plots,
    )
    report.update(
        mode="refit" if decision.refit else "project",
        space_id=basis.space_id,
        refit=decision.to_dict(),
        new_rows=int(new.count()),
        fitted_rows=merged.rows,
        new_contents=len(scan.new_contents),
        duplicates_skipped=scan.skipped,
        projected_batches=batches,
        projected_rows=projected_rows,
        vectors_list=state_files[pca_state.VECTORS_LIST],
        history_datasets=len(history) if decision.refit or previous is None else 0,
    )
    hadoop_fs.write_bytes(spark, args.report, pca_report.report_json(report))
    angle = "none" if decision.max_angle_degrees is None else f"{decision.max_angle_degrees:.2f}"
    print(
        f"{JOB}: rows={rows} input_dim={dim} k={k} explained_variance_total="
        f"{report['explained_variance_total']:.4f} mode={report['mode']} angle={angle} "
        f"projected={projected_rows} seconds={report['seconds']}",
        flush=True,
    )
    return report


def main(argv: list[str] | None = None) -> None:
    with exit_on_job_error(JOB):
        run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
