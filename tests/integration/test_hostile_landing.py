"""Issue #18's "done when", end to end: a landing prefix holding every hostile or careless key
next to good images, through fruits_pipeline on the local backend (moto's S3 server, local Spark,
a real Airflow metadata DB, dag.test in a child process).

Expected: a green first run; every good image (camera names, hidden-looking names, a ':' in the
name, HEIC and WebP, `x.jpg` next to `x.jpg/y.jpg`, unlabelled, in a deeper folder, under a dataset's
own `Test/` folder) featurized exactly once from its own bytes, with its s3:// landing URI and its
label (the folder holding it); every bad key
rejected at planning, rejected by featurize or ignored, each with a reason, the report's counts
adding up to everything landed; no file outside the Airflow home, no object
outside the pipeline's prefixes, another bucket untouched; only the ignored files left under
landing/, so the second run is skipped.

Not landed: an object over the size limit (3 GiB is impractical on moto and nothing may be
patched inside the dag.test child): tests/unit/test_state.py covers the limit.

moto's server routes keys with a regular expression whose '.' stops at a newline (it answers 404
for a key real S3 accepts); `newline_keys_routed` makes that '.' match newlines too, in this
process only (where the server runs), so a newline key behaves as it does on AWS.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import ROOT, TEST_IMAGE_SIZE
from fruits import layout
from fruits_dev import runner, s3_server
from fruits_dev.samples import fruit_spec, generate_samples, heic_bytes, render_fruit, webp_bytes

pytestmark = pytest.mark.spark

BUCKET = "fruits-hostile"
OTHER_BUCKET = "other-bucket"
CONF = {"bucket": BUCKET, "weights": "none", "image_size": TEST_IMAGE_SIZE, "sensor_timeout": 0}
LABELS = ["Apple Red 1", "Banana", "Kiwi"]
ESCAPE = f"hostile-escape-{os.getpid()}"  # the file name a '..' key would create if it escaped


def image_bytes(n: int, encode: str = "jpeg") -> bytes:
    """A distinct, decodable image (no two calls with different n share content)."""
    rgb, _ = render_fruit(fruit_spec(LABELS[n % 3]), np.random.default_rng([1818, n]), 60, 60)
    if encode == "webp":
        return webp_bytes(rgb)
    if encode == "heic":
        return heic_bytes(rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# Good images with hostile-looking but representable names (relative to landing/) -> expected label.
GOOD = {
    "Apple Red 1/_DSC0001.JPG": ("Apple Red 1", image_bytes(1)),
    "Banana/.hidden.jpg": ("Banana", image_bytes(2)),
    "Kiwi/IMG 2026-11-30 12:30:01.jpg": ("Kiwi", image_bytes(3)),
    "Banana/x.jpg": ("Banana", image_bytes(4)),
    "Banana/x.jpg/y.jpg": ("x.jpg", image_bytes(5)),  # the folder holding it, whatever its name
    "loose.jpg": (None, image_bytes(6)),  # directly under landing/: no label
    "Kiwi/2026/11-30/deep.jpg": ("11-30", image_bytes(7)),  # nested: the innermost folder is the label
    "Test/Kiwi/r_11_100.jpg": ("Kiwi", image_bytes(11)),  # Fruits-360's Test/<Label>/ landed as it is
    "Kiwi/collide.jpg": ("Kiwi", image_bytes(8)),  # what '//' and '/./' keys used to overwrite
    "Apple Red 1/IMG_0002.HEIC": ("Apple Red 1", image_bytes(9, "heic")),
    "Banana/export.WEBP": ("Banana", image_bytes(10, "webp")),
}
# Rejected at planning (relative key -> a fragment of the expected reason); each holds a good image,
# so only its name can reject it.
UNSAFE = {
    "Kiwi/cr\r.jpg": "U+000D",
    "Kiwi/line\u2028sep.jpg": "U+2028",
    "Kiwi/nel\u0085.jpg": "U+0085",
    "Kiwi/a.jpg\ns3://other-bucket/secret.jpg": "U+000A",
    "Kiwi//collide.jpg": "empty path segment",
    "Kiwi/./collide.jpg": "'.' or '..' path segment",
    f"Kiwi/../../../../{ESCAPE}.jpg": "'.' or '..' path segment",
    "Banana/copy s3://other-bucket/secret.jpg": "URI scheme",
    "Banana/" + "b" * 266 + ".jpg": "longer than 255 bytes",
    "Kiwi/trailing.jpg ": "white space",
    "Apple Red 1/placeholder.jpg": "empty file (0 bytes)",  # zero bytes (and samples' empty_0.jpg)
}
DUPLICATE = "Kiwi/copy of a sample.jpg"  # the bytes of a sample image, under a second key


@pytest.fixture(scope="module")
def newline_keys_routed():
    from moto.moto_server import utilities

    original = utilities.RegexConverter.__init__

    def dotall(self, url_map, *items):
        original(self, url_map, *items)
        self.regex = f"(?s:{self.regex})"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utilities.RegexConverter, "__init__", dotall)
        yield


class Deployment:
    def __init__(self, tmp: Path, endpoint: str):
        self.tmp = tmp
        self.s3 = s3_server.client(endpoint)
        s3_server.ensure_bucket(self.s3, BUCKET)
        s3_server.ensure_bucket(self.s3, OTHER_BUCKET)
        self.env = runner.airflow_env(
            tmp / "airflow",
            extra={
                "AIRFLOW_CONN_AWS_DEFAULT": runner.aws_connection(endpoint),
                "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
                "FRUITS_TASK_RETRIES": "0",
                "FRUITS_SPARK_DRIVER_MEMORY": "2g",
            },
        )
        self.runs = 0

    def run(self) -> dict:
        self.runs += 1
        return runner.run_once(self.env, CONF, log_file=self.tmp / f"run-{self.runs}.log")

    def keys(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def body(self, key: str, bucket: str = BUCKET) -> bytes:
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def json(self, key: str):
        return json.loads(self.body(key))

    def jsonl(self, key: str) -> list[dict]:
        return [json.loads(line) for line in self.body(key).decode().split("\n") if line]

    def parquet(self, prefix: str) -> pa.Table:
        parts = [k for k in self.keys(prefix) if k.endswith(".parquet")]
        return pa.concat_tables([pq.read_table(io.BytesIO(self.body(k))) for k in parts])


class Landing:
    """Everything landed, by relative key, and what the pipeline must make of each."""

    def __init__(self):
        self.bytes: dict[str, bytes] = {}
        self.good: dict[str, str | None] = {}  # -> label
        self.planning: dict[str, str] = {}  # -> reason fragment
        self.featurize_rejects: set[str] = set()
        self.ignored: set[str] = set()

    def uri(self, relative: str) -> str:
        return f"s3://{BUCKET}/landing/{relative}"


def land(deployment: Deployment) -> tuple[Landing, bytes]:
    landing = Landing()
    samples = generate_samples(
        deployment.tmp / "samples", labels=LABELS, per_class=2, seed=18, awkward=True, broken=True, modern_formats=True
    )
    for path in samples.images:
        rel = path.relative_to(samples.root).as_posix()
        landing.bytes[rel], landing.good[rel] = path.read_bytes(), rel.split("/", 1)[0]
    for path, kind in samples.broken.items():
        rel = path.relative_to(samples.root).as_posix()
        landing.bytes[rel] = path.read_bytes()
        if kind == "empty":
            landing.planning[rel] = "empty file (0 bytes)"
        else:
            landing.featurize_rejects.add(rel)
    for path in samples.ignored:  # README.txt, labels.csv, .DS_Store
        rel = path.relative_to(samples.root).as_posix()
        landing.bytes[rel] = path.read_bytes()
        landing.ignored.add(rel)
    for rel, (label, data) in GOOD.items():
        landing.bytes[rel], landing.good[rel] = data, label
    for n, (rel, reason) in enumerate(UNSAFE.items(), 100):
        landing.bytes[rel] = b"" if reason.startswith("empty file") else image_bytes(n)
        landing.planning[rel] = reason
    first_sample = sorted(p for p in samples.images if p.suffix == ".jpg")[0]
    landing.bytes[DUPLICATE], landing.good[DUPLICATE] = first_sample.read_bytes(), "Kiwi"
    assert len(landing.bytes) == len(landing.good) + len(landing.planning) + len(landing.featurize_rejects) + len(
        landing.ignored
    )
    assert {".webp", ".heic"} <= {Path(k).suffix.lower() for k in landing.good}
    assert "\n" in "".join(landing.bytes) and any(".." in k.split("/") for k in landing.bytes)

    for rel, data in landing.bytes.items():
        deployment.s3.put_object(Bucket=BUCKET, Key="landing/" + rel, Body=data)
    assert deployment.keys("landing/") == sorted("landing/" + k for k in landing.bytes)  # stored exactly
    secret = image_bytes(999)
    deployment.s3.put_object(Bucket=OTHER_BUCKET, Key="secret.jpg", Body=secret)
    return landing, secret


def tree(root: Path) -> set[Path]:
    return {Path(dirpath, name) for dirpath, dirnames, files in os.walk(root) for name in [*dirnames, *files]}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, newline_keys_routed):
    with s3_server.s3_endpoint() as endpoint:
        yield Deployment(tmp_path_factory.mktemp("hostile"), endpoint)


@pytest.fixture(scope="module")
def first_run(deployment, tmp_path_factory):
    landing, secret = land(deployment)
    before = tree(tmp_path_factory.getbasetemp())
    result = deployment.run()
    return landing, secret, result, before


@pytest.fixture(scope="module")
def second_run(deployment, first_run):
    bucket_before = {k: deployment.s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in deployment.keys()}
    return deployment.run(), bucket_before


def report_of(deployment, result) -> dict:
    return deployment.json(layout.report_key(result["run_id"]))


def only_batch(deployment) -> dict:
    ledger = deployment.json(layout.LEDGER_KEY)
    assert len(ledger["batches"]) == 1, ledger
    return ledger["batches"][0]


def test_the_first_run_is_green(deployment, first_run):
    landing, secret, result, before = first_run
    failed = {t: s for t, s in result["tasks"].items() if s != "success"}
    assert result["state"] == "success" and not failed, (failed, result["output"][-4000:])
    report = report_of(deployment, result)
    assert report["status"] == "success"
    batch = only_batch(deployment)
    assert (batch["images"], batch["planning_rejects"]) == (
        len(landing.good) + len(landing.featurize_rejects),
        len(landing.planning),
    )


def test_every_good_image_is_featurized_once_from_its_own_bytes(deployment, first_run):
    landing, secret, result, before = first_run
    batch = only_batch(deployment)
    features = deployment.parquet(layout.features_prefix(batch["batch_id"]))
    rows = features.select(["path", "label", "sha256", "size_bytes"]).to_pylist()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths))  # once each
    assert sorted(paths) == sorted(landing.uri(k) for k in landing.good)
    by_uri = {landing.uri(k): k for k in landing.good}
    for row in rows:
        relative = by_uri[row["path"]]
        data = landing.bytes[relative]
        # the bytes of that very object: '//' and '/./' neighbours of Kiwi/collide.jpg changed nothing
        assert (row["sha256"], row["size_bytes"]) == (hashlib.sha256(data).hexdigest(), len(data)), relative
        assert row["label"] == landing.good[relative], relative
    assert [r["label"] for r in rows].count(None) == 1  # loose.jpg, the only unlabelled image
    assert all(len(v) == 1280 for v in features.column("features").to_pylist())
    suffixes = {Path(k).suffix.lower() for k in landing.good}
    assert {".jpg", ".jpeg", ".png", ".webp", ".heic"} <= suffixes
    # another bucket's object named by a forged key was never read
    assert hashlib.sha256(secret).hexdigest() not in {r["sha256"] for r in rows}
    assert not any(p.startswith(f"s3://{OTHER_BUCKET}") for p in paths)


def test_every_bad_key_is_rejected_or_ignored_with_a_reason_and_counted(deployment, first_run):
    landing, secret, result, before = first_run
    batch_id = only_batch(deployment)["batch_id"]
    report = report_of(deployment, result)

    planning = {r["path"]: r for r in deployment.jsonl(layout.planning_rejects_key(batch_id))}
    assert sorted(planning) == sorted(landing.uri(k) for k in landing.planning)
    for relative, fragment in landing.planning.items():
        record = planning[landing.uri(relative)]
        assert fragment in record["reason"], (relative, record)
        assert record["size_bytes"] == len(landing.bytes[relative]) and record["etag"]

    rejects = deployment.parquet(layout.rejects_prefix(batch_id)).to_pylist()
    assert sorted(r["path"] for r in rejects) == sorted(landing.uri(k) for k in landing.featurize_rejects)
    assert all(r["reason"] and "not found" not in r["reason"] for r in rejects), rejects

    sources = [e["source"] for e in deployment.jsonl(layout.manifest_key(batch_id))]
    assert sorted(sources) == sorted(landing.uri(k) for k in [*landing.good, *landing.featurize_rejects])
    assert all(
        re.fullmatch(rf"s3://{BUCKET}/batches/{batch_id}/images/\d{{6}}\.[a-z]+", e["read"])
        for e in deployment.jsonl(layout.manifest_key(batch_id))
    )

    assert report["features_rows"] == len(landing.good)
    assert report["rejects_rows"] == len(landing.featurize_rejects) == sum(report["reject_reasons"].values())
    assert report["images_sensed"] == report["features_rows"] + report["rejects_rows"]
    assert report["planning_rejects"] == len(landing.planning) == sum(report["planning_reject_reasons"].values())
    assert report["planning_reject_reasons"] == {"unsafe name": len(landing.planning) - 2, "empty file": 2}
    assert sum(report["ignored"].values()) == len(landing.ignored)
    assert all(reason.startswith("not an image type") for reason in report["ignored"])
    assert report["duplicate_contents"] == {"within_batch": 1, "of_earlier_batches": 0}
    landed = len(landing.bytes)
    assert (
        report["features_rows"] + report["rejects_rows"] + report["planning_rejects"] + sum(report["ignored"].values())
        == landed
    )


def test_the_landing_prefix_keeps_only_the_ignored_files(deployment, first_run):
    landing, secret, result, before = first_run
    assert deployment.keys("landing/") == sorted("landing/" + k for k in landing.ignored)


def test_a_second_run_finds_nothing_and_is_skipped(deployment, first_run, second_run):
    result, bucket_before = second_run
    assert result["tasks"]["wait_for_new_images"] == "skipped"
    assert all(state == "skipped" for state in result["tasks"].values()), result["tasks"]
    assert result["state"] != "failed"
    assert {k: deployment.s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in deployment.keys()} == bucket_before


def test_nothing_is_written_outside_the_airflow_home_or_the_pipeline_prefixes(
    deployment, first_run, second_run, tmp_path_factory
):
    landing, secret, result, before = first_run
    allowed = [deployment.tmp / "airflow"]  # task logs and the metadata DB: the jobs read and write S3 only
    new = {
        p
        for p in tree(tmp_path_factory.getbasetemp()) - before
        if not any(p == a or a in p.parents for a in allowed) and not re.fullmatch(r"run-\d+\.log", p.name)
    }
    assert not new, sorted(new)
    # where a '..' key joined onto a local path would land: under /tmp or the repository (the jobs'
    # working directory)
    escaped = [Path(d, n) for d, _, names in os.walk("/tmp") for n in names if ESCAPE in n]
    escaped += [p for pattern in (f"*{ESCAPE}*", f"*/*{ESCAPE}*") for p in ROOT.glob(pattern)]
    assert not escaped, escaped

    ignored = {"landing/" + k for k in landing.ignored}
    outside = [k for k in deployment.keys() if not k.startswith(layout.OUTPUT_PREFIXES) and k not in ignored]
    assert not outside, outside
    assert deployment.keys(bucket=OTHER_BUCKET) == ["secret.jpg"]
    assert deployment.body("secret.jpg", bucket=OTHER_BUCKET) == secret
