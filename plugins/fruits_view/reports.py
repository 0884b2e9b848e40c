"""What the Fruits view reads from the bucket, and nothing else.

Only three kinds of object are ever read: run reports (`reports/<run>.json`), the PNG plots a
report names under its own `pca/run=<run>/` prefix, and the classifier's `metrics.json` and
`confusion_matrix.png` under `classifier/run=*/`. A run id from a request is looked up among the
report keys; it never becomes a key or a path by itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from fruits import layout
from fruits.contract import ClassifierOutputs

CLASSIFIER_METRICS = re.compile(r"^classifier/run=[A-Za-z0-9._=-]+/metrics\.json$")
RUN_ID = re.compile(r"^[A-Za-z0-9._:+=-]{1,250}$")  # what Airflow run ids are made of
PLOTS = ("scree", "scatter", "confusion_matrix")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_RUNS = 50


class NotFound(LookupError):
    """Unknown run, plot or malformed parameter: the view answers 404."""


@dataclass
class Reports:
    """Reads through a fruits.storage.Bucket (the S3Hook on aws_default, bound to the bucket)."""

    bucket: object  # fruits.storage.Bucket

    @classmethod
    def from_settings(cls) -> Reports:
        from fruits import settings
        from fruits.storage import Bucket

        deployment = settings.load()
        return cls(Bucket.connect(deployment.aws_conn_id, deployment.bucket))

    @property
    def name(self) -> str:
        return self.bucket.name

    def _report_objects(self) -> list[dict]:
        """Report objects, newest first (LastModified), at most MAX_RUNS."""
        client = self.bucket.hook.get_conn()
        objects = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=layout.REPORTS_PREFIX):
            objects.extend(
                o for o in page.get("Contents", []) if re.fullmatch(r"reports/[A-Za-z0-9._=-]+\.json", o["Key"])
            )
        objects.sort(key=lambda o: o["LastModified"], reverse=True)
        return objects[:MAX_RUNS]

    def recent(self) -> list[dict]:
        runs = []
        for obj in self._report_objects():
            try:
                report = json.loads(self.bucket.read_text(obj["Key"]))
            except (ValueError, OSError):
                continue
            if isinstance(report, dict) and isinstance(report.get("run_id"), str):
                runs.append(report)
        return runs

    def report(self, run_id: str) -> dict:
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise NotFound("no such run")
        key = layout.report_key(run_id)
        if key not in set(self.bucket.list_keys(layout.REPORTS_PREFIX)):
            raise NotFound("no such run")
        report = json.loads(self.bucket.read_text(key))
        if not isinstance(report, dict) or report.get("run_id") != run_id:
            raise NotFound("no such run")
        return report

    def classifier(self, run_id: str) -> dict | None:
        """The newest classifier metrics whose pca_run is this run (None when there are none)."""
        found = []
        for key in self.bucket.list_keys(layout.CLASSIFIER_PREFIX):
            if not CLASSIFIER_METRICS.fullmatch(key):
                continue
            try:
                metrics = json.loads(self.bucket.read_text(key))
            except (ValueError, OSError):
                continue
            if isinstance(metrics, dict) and metrics.get("pca_run") in (run_id, layout.safe_run_id(run_id)):
                found.append((key, metrics))
        if not found:
            return None
        key, metrics = found[-1]
        folder = key.rsplit("/", 1)[0] + "/"
        png = ClassifierOutputs(folder).confusion_matrix
        return {
            "key": key,
            "uri": self.bucket.uri(folder),
            "metrics": metrics,
            "confusion_matrix": png if self.bucket.exists(png) else None,
        }

    def plot_key(self, run_id: str, name: str) -> str:
        """The key of one plot of a known run, confined to that run's own outputs."""
        if name not in PLOTS:
            raise NotFound("no such plot")
        report = self.report(run_id)
        if name == "confusion_matrix":
            classifier = self.classifier(run_id)
            if not classifier or not classifier["confusion_matrix"]:
                raise NotFound("no confusion matrix for this run")
            return classifier["confusion_matrix"]
        uri = (report.get("outputs") or {}).get(name)
        head = self.bucket.uri(layout.pca_prefix(run_id))
        if (
            not isinstance(uri, str)
            or not uri.startswith(head)
            or not uri.endswith(".png")
            or "/../" in uri
            or not re.fullmatch(r"[A-Za-z0-9._/=-]+", uri[len(head) :])
        ):
            raise NotFound("no such plot")
        return uri[len(f"s3://{self.name}/") :]

    def plot(self, run_id: str, name: str) -> bytes:
        key = self.plot_key(run_id, name)
        if not self.bucket.exists(key):
            raise NotFound("plot not found")
        data = self.bucket.read_bytes(key)
        if not data.startswith(PNG_MAGIC):
            raise NotFound("not a PNG")
        return data
