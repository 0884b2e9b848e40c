"""`make demo`: fruits_pipeline end to end on one machine, with nothing to set up.

1. S3: the endpoint in FRUITS_S3_ENDPOINT (MinIO, ...) or an embedded moto server on loopback.
2. Generates Fruits-360-like sample images (a few broken on purpose) and uploads them to
   s3://<bucket>/landing/.
3. Runs fruits_pipeline once and prints the run report: in local mode (Spark local[*]), or with
   `--compute emr` (`make demo-emr`) on the EMR backend, its cluster and steps played by the
   local EMR (fruits_dev/local_emr.py) on EMR's Spark 3.5 stack, its step logs listed.
4. Runs fruits_classifier on that run's PCA vectors (what the Asset event triggers under a
   scheduler) and prints its accuracy next to the majority baseline.
5. Copies the bucket to demo-output/bucket/ (plots, parquet, reports, classifier) and says where
   things are.

The embedded server forgets everything when the demo ends, so the bucket copy is also the
demo's memory: `make demo-more` (`--add-images N`) restores it, lands N new images and runs
again, which shows the incremental behaviour (only the new images are featurized).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from fruits.contract import ClassifierOutputs
from fruits.core import report as report_mod
from fruits.layout import classifier_prefix, safe_run_id
from fruits.settings import DEFAULT_REGION, PROJECT_ROOT
from fruits_dev import local_emr, runner, s3_server
from fruits_dev.samples import generate_samples

DEFAULT_OUT = PROJECT_ROOT / "demo-output"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--add-images",
        type=int,
        default=0,
        metavar="N",
        help="keep the previous demo's bucket and land N new images before running",
    )
    parser.add_argument("--classes", type=int, default=6, help="fruit classes in the first batch (default 6)")
    parser.add_argument("--per-class", type=int, default=12, help="images per class in the first batch (default 12)")
    parser.add_argument(
        "--weights",
        default="none",
        help="none (default: seeded random weights, works offline) or imagenet (needs internet)",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--bucket", default="fruits")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="local folder for outputs (default demo-output/)")
    parser.add_argument("--endpoint", help="S3 endpoint to use instead of an embedded server (or FRUITS_S3_ENDPOINT)")
    parser.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="land your own images instead of generated ones (label: the folder holding each image)",
    )
    parser.add_argument(
        "--compute",
        choices=("local", "emr"),
        default="local",
        help="local Spark (default) or the EMR backend on the local EMR (`make demo-emr`)",
    )
    args = parser.parse_args(argv)
    if args.images and not args.images.is_dir():
        parser.error(f"--images {args.images}: not a folder")
    if args.compute == "emr" and (args.endpoint or os.environ.get("FRUITS_S3_ENDPOINT")):
        parser.error(
            "--compute emr runs on the embedded S3 + EMR server (its local EMR runs the steps): "
            "drop --endpoint / FRUITS_S3_ENDPOINT"
        )
    return args


def restore_bucket(s3, bucket: str, snapshot: Path) -> int:
    return s3_server.upload_tree(s3, bucket, snapshot, "") if snapshot.exists() else 0


def snapshot_bucket(s3, bucket: str, snapshot: Path) -> int:
    if snapshot.exists():
        shutil.rmtree(snapshot)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            target = snapshot / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            count += 1
    return count


def land_images(s3, args, out: Path) -> int:
    """Generate and upload sample images; a follow-up run adds new files only."""
    runs = len(list((out / "bucket" / "reports").glob("*.json"))) if args.add_images else 0
    if args.images:
        uploaded = s3_server.upload_tree(s3, args.bucket, args.images, "landing/")
        say(
            f"landed {uploaded} files of {args.images} under s3://{args.bucket}/landing/ "
            f"(label: the folder holding each image)"
        )
        return uploaded
    root = out / "samples" / f"set-{runs}"
    if root.exists():
        shutil.rmtree(root)
    if args.add_images:
        # Exactly N images: as many classes as divide N evenly (at most --classes).
        classes = max(c for c in range(1, min(args.classes, args.add_images) + 1) if args.add_images % c == 0)
        samples = generate_samples(
            root, n_classes=classes, per_class=args.add_images // classes, start_index=1000 * (runs + 1), seed=runs + 1
        )
    else:
        samples = generate_samples(
            root, n_classes=args.classes, per_class=args.per_class, awkward=True, broken=True, original_size=1, seed=0
        )
    uploaded = s3_server.upload_tree(s3, args.bucket, root, "landing/")
    say(
        f"landed {len(samples.images)} images, {len(samples.broken)} broken files and "
        f"{len(samples.ignored)} non-image files under s3://{args.bucket}/landing/ ({uploaded} objects)"
    )
    return uploaded


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    snapshot = out / "bucket"
    if not args.add_images and out.exists():
        for sub in ("bucket", "samples", "work", "logs", "airflow-home", "emr"):  # a fresh metadata DB too
            shutil.rmtree(out / sub, ignore_errors=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)

    with s3_server.s3_endpoint(args.endpoint) as endpoint:
        embedded = not (args.endpoint or os.environ.get("FRUITS_S3_ENDPOINT"))
        say(f"S3 endpoint {endpoint}" + (" (embedded moto server on loopback)" if embedded else ""))
        s3 = s3_server.client(endpoint)
        s3_server.ensure_bucket(s3, args.bucket)
        if args.add_images:
            if not snapshot.exists():
                say("no previous demo found: run `make demo` first")
                return 2
            say(f"restored {restore_bucket(s3, args.bucket, snapshot)} objects of the previous demo")
        land_images(s3, args, out)

        env = runner.airflow_env(
            out / "airflow-home",
            extra={
                "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(endpoint),
                "FRUITS_BUCKET": args.bucket,
                "FRUITS_COMPUTE": args.compute,
                **(local_emr.dag_settings(poll_seconds=2) if args.compute == "emr" else {}),
            },
        )
        emr = start_local_emr(s3, endpoint, args.bucket, out) if args.compute == "emr" else None
        where = "the local EMR on EMR's Spark stack" if emr else "local Spark"
        try:
            pipeline = run_dag(
                env,
                "fruits_pipeline",
                {"bucket": args.bucket, "weights": args.weights, "image_size": args.image_size, "sensor_timeout": 0},
                out,
                f"{where}, weights={args.weights}, {args.image_size}px",
            )
            classifier = None
            if pipeline["state"] == "success":
                # What the Asset event would trigger under a scheduler, run here by hand on the same PCA run.
                classifier = run_dag(
                    env, "fruits_classifier", {"bucket": args.bucket, "pca_run_id": pipeline["run_id"]}, out, where
                )
        finally:
            if emr:
                emr.stop()
        copied = snapshot_bucket(s3, args.bucket, snapshot)
        say(f"copied {copied} objects of s3://{args.bucket}/ to {snapshot}")

    if pipeline["state"] != "success":
        say(f"the run did not succeed; see {pipeline['log_file']}")
        return 1
    show_pipeline_outputs(snapshot, pipeline["run_id"], args.bucket)
    if classifier["state"] != "success":
        say(f"the classifier run did not succeed; see {classifier['log_file']}")
        return 1
    show_classifier(snapshot, classifier["run_id"])
    if not args.add_images:
        more = "make demo-more" + (" DEMO_ARGS='--compute emr'" if args.compute == "emr" else "")
        say(f"next: `{more}` lands 8 new images and runs again (only those are featurized)")
    return 0


def start_local_emr(s3, endpoint: str, bucket: str, out: Path):
    """The local EMR playing the cluster's nodes; each finished step says where its logs are."""
    from fruits_dev import emr_stack

    def report_step(step) -> None:
        say(
            f"EMR step {step.step_id} {step.name!r} {step.state} in {step.seconds:.0f}s "
            f"(exit {step.exit_code}); logs {step.log_dir}"
        )

    stack = emr_stack.locate()
    say(
        f"local EMR: steps run by spark-submit of {stack.root} (Spark {stack.spark_version}), "
        f"work files in {out / 'emr'}"
    )
    return local_emr.LocalEmr(
        s3=s3,
        endpoint_url=endpoint,
        bucket=bucket,
        stack=stack,
        work_dir=out / "emr",
        region=DEFAULT_REGION,
        on_step=report_step,
    ).start()


def run_dag(env: dict, dag_id: str, conf: dict, out: Path, what: str) -> dict:
    log_file = out / "logs" / f"{dag_id}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    say(f"running {dag_id} ({what}); Airflow log: {log_file}")
    started = time.perf_counter()
    result = runner.run_once(env, conf, log_file=log_file, dag_id=dag_id)
    say(f"{dag_id} run {result['run_id']} ended {result['state']} in {time.perf_counter() - started:.0f}s")
    for task_id, state in sorted(result["tasks"].items()):
        print(f"    {state or 'none':<16} {task_id}")
    return {**result, "log_file": log_file}


def local_copy(snapshot: Path, uri: str) -> Path:
    """Where an s3:// URI of the bucket is in the demo's copy of it."""
    return snapshot / uri.split("://", 1)[1].split("/", 1)[1]


def show_pipeline_outputs(snapshot: Path, run_id: str, bucket: str) -> None:
    report_path = snapshot / "reports" / (safe_run_id(run_id) + ".json")
    report = json.loads(report_path.read_text())
    print(report_mod.render(report))
    outputs = report["outputs"]
    say("outputs (local copies):")
    for label, path in (
        ("run report", report_path),
        ("scree plot", local_copy(snapshot, outputs["scree"])),
        ("PCA scatter", local_copy(snapshot, outputs["scatter"])),
        ("PCA vectors", local_copy(snapshot, outputs["vectors"])),
        ("features", snapshot / "features"),
        ("rejects", snapshot / "rejects"),
        ("ledger", snapshot / "state" / "ledger.json"),
    ):
        print(f"    {label:<18} {path}")


def show_classifier(snapshot: Path, run_id: str) -> None:
    outputs = ClassifierOutputs(str(snapshot / classifier_prefix(run_id)))
    metrics = json.loads(Path(outputs.metrics).read_text())
    say(
        f"classifier: accuracy {metrics['accuracy']:.3f} on {metrics['test_rows']} test images, majority "
        f"baseline {metrics['majority_baseline']:.3f}, macro F1 {metrics['macro_f1']:.3f} "
        f"({len(metrics['labels'])} labels, {metrics['train_rows']} training images)"
    )
    for warning in metrics.get("warnings", []):
        say(f"classifier warning: {warning}")
    for label, path in (
        ("confusion matrix", outputs.confusion_matrix),
        ("classifier metrics", outputs.metrics),
        ("classifier model", outputs.model),
    ):
        print(f"    {label:<18} {path}")


if __name__ == "__main__":
    sys.exit(main())
