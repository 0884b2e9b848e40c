"""The cost calculator (fruits_dev.cost): its arithmetic, and its S3 request counts per image
against what one real planning + commit does on moto (counted at botocore's API-call layer)."""

from __future__ import annotations

import io
import threading
from collections import Counter

import botocore.client
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits import events, layout
from fruits.core import pipeline, planning
from fruits_dev import cost

VALIDATED = {"features_rows": 0, "rejects_rows": 0}


# ------------------------------------------------------------------------------ arithmetic


def test_instance_hours_are_images_over_the_measured_rate_plus_each_runs_fixed_time():
    throughput, cluster = cost.Throughput(), cost.Cluster()
    assert throughput.images_per_s_per_core == pytest.approx(195.2 / 2)
    assert cluster.nodes == 3 and throughput.cores_per_node == 2
    work = 1_000_000 / (97.6 * 2 * 2)  # images / (images/s per core x cores per node x core nodes)
    assert cost.featurize_seconds(1_000_000, throughput, cluster) == pytest.approx(work)
    fixed = 8 * 60 + 60 + 13.8 + 25 + 60
    assert cluster.fixed_seconds_per_run == pytest.approx(fixed)
    month = cost.estimate(cost.Month(images=1_000_000, runs=720))
    assert month.featurize_hours == pytest.approx(work / 3600)
    assert month.node_hours == pytest.approx((work + 720 * fixed) * 3 / 3600)
    per_node_hour = 0.224 + 0.056 + 64 * 0.0928 / 730
    assert month.compute_usd == pytest.approx(month.node_hours * per_node_hour)
    assert cost.run_fixed_usd() == pytest.approx(fixed * 3 / 3600 * per_node_hour)
    assert cost.featurize_usd(1_000_000) == pytest.approx(work * 3 / 3600 * per_node_hour)
    assert month.compute_usd == pytest.approx(cost.featurize_usd(1_000_000) + 720 * cost.run_fixed_usd())


def test_phone_photos_add_their_decode_time_to_each_image():
    throughput = cost.Throughput()
    per_image = 1 / 97.6 + 0.0384
    assert throughput.per_core(phone_photos=True) == pytest.approx(1 / per_image)
    low, high = throughput.per_core_range
    assert (low, high) == pytest.approx((1000 / 14.5, 1000 / 8.69))
    assert low < throughput.images_per_s_per_core < high


def test_request_prices_by_class_and_delete_is_free():
    prices = cost.Prices()
    assert cost.request_cost({"CopyObject": 1000, "PutObject": 1000, "ListObjectsV2": 1000}, prices) == pytest.approx(
        3 * 0.0053
    )
    assert cost.request_cost({"GetObject": 1000, "HeadObject": 1000, "DeleteObject": 10**9}, prices) == pytest.approx(
        2 * 0.00042
    )


def test_monthly_requests_add_per_image_and_per_run_counts():
    counts = cost.monthly_requests(images=1_000_000, runs=10)
    assert counts["CopyObject"] == 1_000_000
    assert counts["PutObject"] == 2_000_000 + 10 * (4 + 200)
    assert counts["GetObject"] == 3_000_000 + 1_000_000 + 10 * (7 + 200)
    assert counts["HeadObject"] == 1_000_000 + 1_000_000 + 10 * 5
    assert counts["ListObjectsV2"] == 1_000 + 10 * (3 + 50)


def test_storage_keeps_each_image_once_with_its_features_pca_vector_and_state():
    sizes = cost.Sizes()
    month = cost.estimate(cost.Month(images=1_000_000, runs=30))
    per_image = 5_000 + 7_600 + 50 * 8 + 25 + 560
    assert month.stored_gb == pytest.approx(per_image * 1_000_000 / 1e9)
    assert month.storage_usd == pytest.approx(month.stored_gb * 0.024)
    photos = cost.estimate(cost.Month(images=1_000_000, runs=30, phone_photos=True, months_kept=12))
    assert photos.stored_gb == pytest.approx(12 * sizes.kept(3_500_000) * 1_000_000 / 1e9)


def test_back_to_back_runs_fill_the_month_left_after_featurizing():
    cluster = cost.Cluster()
    runs = cost.back_to_back_runs(1_000_000)
    left = 30 * 86400 - cost.featurize_seconds(1_000_000, cost.Throughput(), cluster)
    assert runs == int(left // cluster.fixed_seconds_per_run)
    # so the cluster is up (almost) the whole month
    assert cost.estimate(cost.Month(runs=runs)).node_hours == pytest.approx(30 * 24 * 3, rel=0.01)


def test_the_start_comparison_reuses_the_events_module():
    start = cost.start_cost(1_000_000)
    counts = events.monthly_start_requests(poke_interval=60, sqs_poll_seconds=60, images=1_000_000)
    assert start["poll_list_requests"] == counts["poll_list_requests"] == 43_200
    assert start["poll_usd"] == pytest.approx(43_200 / 1000 * 0.0053)
    assert start["sqs_requests"] == counts["sqs_idle_receives"] + counts["sqs_image_requests"]
    assert start["sqs_usd"] == pytest.approx((start["sqs_requests"] - 1_000_000) / 1e6 * 0.40)


def test_the_module_prints_both_image_sizes_and_every_scenario(capsys):
    cost.main()
    out = capsys.readouterr().out
    assert out.count("| daily runs (30): 30 |") == 2 and out.count("| events, steady trickle: back to back: ") == 2
    assert "phone photos" in out and "Fruits-360" in out and "| polling | 43,200 LIST |" in out


# ------------------------------------------------------------------------------ against the code


@pytest.fixture
def count_requests(monkeypatch):
    """Count S3 API calls by operation while `phase` names one (botocore's one call path)."""
    counts: dict[str, Counter] = {}
    phase: dict[str, str | None] = {"now": None}
    lock = threading.Lock()
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation, params):
        if phase["now"]:
            with lock:
                counts.setdefault(phase["now"], Counter())[operation] += 1
        return original(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return counts, phase


def _run(bucket, count_requests, n: int, tag: str) -> Counter:
    """Land n new images, plan, write their features (distinct contents), commit: the requests."""
    counts, phase = count_requests
    for i in range(n):
        bucket.write_bytes(f"landing/Apple/{tag}_r_{i}_100.jpg", f"{tag} image {i}".encode())
    phase["now"] = f"{tag} plan"
    batch = planning.plan_batch(bucket, "landing/")
    phase["now"] = None
    rows = [(entry.source, f"{tag}{i:063d}") for i, entry in enumerate(planning.read_entries(bucket, batch.batch_id))]
    sink = io.BytesIO()
    pq.write_table(pa.table({"path": [p for p, _ in rows], "sha256": [s for _, s in rows]}), sink)
    bucket.write_bytes(layout.features_prefix(batch.batch_id) + "part-0.parquet", sink.getvalue())
    phase["now"] = f"{tag} commit"
    pipeline.commit(bucket, batch, VALIDATED, f"run-{tag}")
    phase["now"] = None
    assert bucket.list_keys("landing/") == []
    return counts[f"{tag} plan"] + counts[f"{tag} commit"]


def test_the_models_requests_per_image_and_per_run_are_what_planning_and_commit_do(bucket, count_requests):
    _run(bucket, count_requests, 4, "first")  # the ledger's creation is not a steady run
    small = _run(bucket, count_requests, 5, "small")
    large = _run(bucket, count_requests, 15, "large")
    per_image = {op: (large[op] - small[op]) / 10 for op in large | small if large[op] != small[op]}
    assert per_image == cost.ORCHESTRATION_REQUESTS_PER_IMAGE
    per_run = {op: small[op] - 5 * per_image.get(op, 0) for op in small}
    assert {op: n for op, n in per_run.items() if n} == cost.ORCHESTRATION_REQUESTS_PER_RUN


def test_the_state_kept_per_image_is_about_the_models(bucket, count_requests):
    _run(bucket, count_requests, 20, "state")
    objects = list(bucket.list_objects(""))
    state = sum(
        o.size
        for o in objects
        if o.key.startswith(("state/keys/", "state/contents/")) or o.key.endswith("/manifest.jsonl")
    )
    assert state / 20 == pytest.approx(cost.Sizes().state_per_image, rel=0.2)


def test_docs_cost_md_holds_the_tables_the_module_prints():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "cost.md").read_text(encoding="utf-8")
    assert cost.markdown() in text, "regenerate the tables of docs/cost.md with `python -m fruits_dev.cost`"
