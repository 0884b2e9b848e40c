"""benchmarks/scale.py at a tiny scale: the orchestration tasks of a run on two seeded histories,
with the real PCA stage in between (`make bench-scale` runs it at 10k / 100k / 1M)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, job_env

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale-results")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--histories", "1000,3000",
                           "--new", "40", "--batch-size", "500", "--out", str(out)],
                          capture_output=True, text=True, env=job_env(), cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [path] = list(out.glob("scale-*.json"))
    return proc, json.loads(path.read_text())


def test_every_history_is_measured_with_the_documented_fields(scale_run):
    proc, result = scale_run
    histories = result["histories"]
    assert [h["committed_images"] for h in histories] == [1000, 3000] and result["new_images"] == 40
    for h in histories:
        assert {"committed_images", "s3_requests", "seconds", "worker_peak_mb", "pca_input_bytes"} <= h.keys()
        assert set(h["tasks"]) == {"sense", "plan", "validate", "commit"}
        assert all(t["s3_requests"] > 0 and t["seconds"] > 0 and t["peak_mb"] > 50 for t in h["tasks"].values())
        assert h["s3_requests"] == sum(t["s3_requests"] for t in h["tasks"].values())
        assert h["worker_peak_mb"] == max(t["peak_mb"] for t in h["tasks"].values())
    assert "| committed images | S3 requests |" in proc.stdout


def test_a_runs_requests_do_not_grow_with_the_history_and_pca_reads_the_new_batch_only(scale_run):
    _, result = scale_run
    small, large = result["histories"]
    # The sensor lists only what waits; planning and commit act per new image; nothing reads the history.
    assert small["tasks"]["sense"]["s3_requests"] == large["tasks"]["sense"]["s3_requests"] <= 3
    assert small["s3_requests"] == large["s3_requests"] and result["targets"]["s3_requests_growth"] == 1.0
    assert not small["pca_refit"] and not large["pca_refit"] and result["targets"]["pca_reads_new_batch_only"]
    # what the PCA stage read: this batch's features and the state files, whose contents index
    # grows by 16 bytes an image of history (3000 - 1000 images here)
    assert large["pca_input_bytes"] - small["pca_input_bytes"] == pytest.approx(16 * 2000, abs=4096)
