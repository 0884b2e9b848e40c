"""The pipeline's state on S3 (moto): hostile keys, ledger integrity, migration and crash points.

Each scenario asserts that nothing is lost, nothing is processed twice, nothing is written
outside its prefix and the next run is unblocked.
"""

from __future__ import annotations

import json

import pytest

from fruits import layout
from fruits.core import keys, ledger, pipeline, planning
from fruits.storage import Bucket, ConcurrentWriteError

GOOD = [
    "landing/Apple/r_1_100.jpg",
    "landing/Apple/_DSC0001.JPG",
    "landing/Apple/.hidden.jpg",
    "landing/Kiwi/2026-11-30/r_2_100.png",
    "landing/Kiwi/IMG_0001.HEIC",
    "landing/Kiwi/a.webp",
    "landing/Pear/x.jpg",
    "landing/Pear/x.jpg/y.jpg",
    "landing/Pear/a:b.jpg",
    "landing/loose.jpg",
]
HOSTILE = {
    "landing/Apple/cr\r.jpg": "U+000D",
    "landing/Apple/ls\u2028.jpg": "U+2028",
    "landing/Apple/nel\u0085.jpg": "U+0085",
    "landing/Apple/nl\ns3://other-bucket/secret.jpg": "U+000A",
    "landing/Apple//double.jpg": "empty path segment",
    "landing/Apple/./dot.jpg": "'.' or '..' path segment",
    "landing/../../escape.jpg": "'.' or '..' path segment",
    "landing/Apple/s3://other/x.jpg": "URI scheme",
    "landing/Apple/" + "n" * 270 + ".jpg": "path segment longer than 255 bytes",
    "landing/Apple/trailing.jpg ": "white space",
}
OK_FEATURIZE = {"features_rows": 0, "rejects_rows": 0}


def land(bucket: Bucket, keys_: list[str], body: bytes = b"jpeg bytes") -> None:
    for key in keys_:
        bucket.write_bytes(key, body)


def test_every_key_is_planned_ignored_or_rejected_with_a_reason(bucket):
    land(bucket, GOOD + list(HOSTILE) + ["landing/Apple/notes.txt", "landing/.DS_Store"])
    bucket.write_bytes("landing/Apple/empty.jpg", b"")
    batch = planning.plan_batch(bucket, "landing/", max_bytes=1024)
    bucket.write_bytes("landing/Apple/huge.jpg", b"x" * 2048)
    planned = planning.read_entries(bucket, batch.batch_id)
    assert sorted(e.source for e in planned) == sorted(bucket.uri(k) for k in GOOD)
    rejects = {bucket.key_of(r.path): r.reason for r in planning.read_planning_rejects(bucket, batch.batch_id)}
    assert set(rejects) == set(HOSTILE) | {"landing/Apple/empty.jpg"}
    for key, expected in HOSTILE.items():
        assert expected in rejects[key], key
    assert rejects["landing/Apple/empty.jpg"] == "empty file (0 bytes)"
    assert batch.images == len(GOOD) and batch.planning_rejects == len(HOSTILE) + 1
    assert batch.ignored == {"not an image type (.txt)": 1, "not an image type (no extension)": 1}
    # labels: the folder holding the image, none for an image right under the landing prefix
    labels = {bucket.key_of(e.source): e.label for e in planned}
    assert labels["landing/Kiwi/2026-11-30/r_2_100.png"] == "2026-11-30" and labels["landing/Kiwi/a.webp"] == "Kiwi"
    assert labels["landing/Pear/x.jpg/y.jpg"] == "x.jpg" and labels["landing/loose.jpg"] is None
    assert batch.unlabelled == 1
    # every planned image was claimed under a safe name of this batch, nothing else was written
    assert all(bucket.key_of(e.read).startswith(f"batches/{batch.batch_id}/images/0") for e in planned)
    written = (
        set(bucket.list_keys(""))
        - set(GOOD)
        - set(HOSTILE)
        - {"landing/Apple/notes.txt", "landing/.DS_Store", "landing/Apple/empty.jpg", "landing/Apple/huge.jpg"}
    )
    assert all(k.startswith(f"batches/{batch.batch_id}/") for k in written)


def test_a_forged_manifest_line_cannot_name_another_bucket(bucket):
    land(bucket, ["landing/Apple/nl\ns3://other-bucket/secret.jpg", "landing/Apple/ok.jpg"])
    batch = planning.plan_batch(bucket, "landing/")
    text = bucket.read_text(layout.manifest_key(batch.batch_id))
    assert len(text.splitlines()) == 1 and "other-bucket" not in text
    bucket.write_text(
        layout.manifest_key(batch.batch_id),
        text
        + json.dumps(
            {
                "source": "s3://other-bucket/secret.jpg",
                "read": "s3://other-bucket/secret.jpg",
                "label": None,
                "size": 1,
                "etag": "x",
            }
        )
        + "\n",
    )
    with pytest.raises(ValueError, match="is not in the batch's bucket fruits-unit"):
        planning.read_entries(bucket, batch.batch_id)


def test_a_bad_key_never_blocks_the_next_run(bucket):
    land(bucket, list(HOSTILE) + ["landing/Apple/good.jpg"])
    first = planning.plan_batch(bucket, "landing/")
    pipeline.commit(bucket, first, {"features_rows": 1, "rejects_rows": 0}, "r1")
    assert bucket.list_keys("landing/") == []  # rejected keys leave too: counted once, in this batch
    assert pipeline.count_new_images(bucket, "landing/") == 0
    land(bucket, ["landing/Apple/next.jpg"])
    second = planning.plan_batch(bucket, "landing/")
    assert planning.manifest_keys(bucket, second.batch_id) == ["landing/Apple/next.jpg"]
    assert second.planning_rejects == 0


@pytest.mark.parametrize("prefix", ["", "/", "pca/", "batches", "state/x/", "reports/"])
def test_the_landing_prefix_cannot_be_empty_or_overlap_the_outputs(bucket, prefix):
    with pytest.raises(ValueError, match="landing prefix"):
        planning.plan_batch(bucket, prefix)


def test_new_content_under_a_committed_key_is_new_and_counted_as_a_relanding(bucket):
    land(bucket, ["landing/Apple/a.jpg", "landing/Apple/b.jpg"])
    first = planning.plan_batch(bucket, "landing/")
    pipeline.commit(bucket, first, OK_FEATURIZE, "r1")
    land(bucket, ["landing/Apple/a.jpg"], body=b"another photo")
    land(bucket, ["landing/Apple/b.jpg"])  # the same bytes again
    second = planning.plan_batch(bucket, "landing/")
    assert planning.manifest_keys(bucket, second.batch_id) == ["landing/Apple/a.jpg"]
    assert second.relandings == 1
    [again] = planning.read_planning_rejects(bucket, second.batch_id)
    assert again.reason == f"already processed (same content, batch {first.batch_id})"


def test_an_image_reuploaded_during_the_run_stays_new(bucket):
    land(bucket, ["landing/Apple/a.jpg"])
    batch = planning.plan_batch(bucket, "landing/")
    land(bucket, ["landing/Apple/a.jpg"], body=b"fixed photo")  # while the jobs run
    result = pipeline.commit(bucket, batch, OK_FEATURIZE, "r1")
    assert result["changed_since_planning"] == 1 and bucket.exists("landing/Apple/a.jpg")
    [entry] = planning.read_entries(bucket, batch.batch_id)
    assert bucket.read_bytes(bucket.key_of(entry.read)) == b"jpeg bytes"  # what the run processed
    second = planning.plan_batch(bucket, "landing/")
    assert planning.manifest_keys(bucket, second.batch_id) == ["landing/Apple/a.jpg"]


def test_a_zero_byte_placeholder_filled_later_is_processed(bucket):
    bucket.write_bytes("landing/Apple/a.jpg", b"")
    first = planning.plan_batch(bucket, "landing/")
    assert first.images == 0 and first.planning_rejects == 1
    pipeline.commit(bucket, first, OK_FEATURIZE, "r1")
    land(bucket, ["landing/Apple/a.jpg"])
    second = planning.plan_batch(bucket, "landing/")
    assert planning.manifest_keys(bucket, second.batch_id) == ["landing/Apple/a.jpg"]


# ----------------------------------------------------------------------------- ledger integrity


def test_two_interleaved_commits_cannot_both_succeed(bucket):
    land(bucket, ["landing/Apple/a.jpg"])
    batch = planning.plan_batch(bucket, "landing/")
    first, second = ledger.load(bucket), ledger.load(bucket)  # both writers read the same version
    for state, run in ((first, "r1"), (second, "r2")):
        ledger.add_batch(
            state,
            ledger.batch_record(
                batch_id=f"b-{run}", run_id=run, images=1, features_rows=1, rejects_rows=0, planning_rejects=0
            ),
            planned_after=[],
            pca=None,
        )
    ledger.save(bucket, first)
    with pytest.raises(ConcurrentWriteError, match="changed since it was read"):
        ledger.save(bucket, second)
    assert ledger.load(bucket).batch_ids() == ["b-r1"]
    assert batch.batch_id not in ledger.load(bucket).batch_ids()


def test_a_batch_planned_before_another_commit_is_refused(bucket):
    land(bucket, ["landing/Apple/a.jpg"])
    early = planning.plan_batch(bucket, "landing/")
    late = planning.plan_batch(bucket, "landing/")  # a second deployment plans the same images
    assert early.batch_id == late.batch_id  # same objects, same id: one commit, the other a no-op
    pipeline.commit(bucket, late, OK_FEATURIZE, "r2")
    pipeline.commit(bucket, early, OK_FEATURIZE, "r1")
    assert ledger.load(bucket).batch_ids() == [late.batch_id]
    with pytest.raises(LookupError):  # nothing left to plan: the images left with the commit
        planning.plan_batch(bucket, "landing/")
    land(bucket, ["landing/Apple/b.jpg"])
    stale = planning.plan_batch(bucket, "landing/")
    land(bucket, ["landing/Apple/c.jpg"])
    newer = planning.plan_batch(bucket, "landing/")
    pipeline.commit(bucket, newer, OK_FEATURIZE, "r3")
    with pytest.raises(ledger.LedgerError, match="committed by another run since batch"):
        pipeline.commit(bucket, stale, OK_FEATURIZE, "r4")


@pytest.mark.parametrize(
    "body",
    [
        "{}",
        "[]",
        "null",
        '{"version": 2, "batches": "none"}',
        '{"version": 1, "batches": [{"batch_id": "b", "images": 1, "features_rows": 1, '
        '"rejects_rows": 0, "keys": "landing/a.jpg"}]}',
    ],
)
def test_a_ledger_off_its_schema_stops_the_run_instead_of_resetting(bucket, body):
    bucket.write_text(layout.LEDGER_KEY, body)
    land(bucket, ["landing/Apple/a.jpg"])
    with pytest.raises(ledger.LedgerError, match="does not match the ledger schema"):
        pipeline.count_new_images(bucket, "landing/")
    with pytest.raises(ledger.LedgerError):
        planning.plan_batch(bucket, "landing/")
    assert bucket.read_text(layout.LEDGER_KEY) == body


def test_a_version_1_ledger_is_migrated_keeping_every_batch(bucket):
    land(bucket, ["landing/Apple/a.jpg", "landing/Apple/b.jpg", "landing/Kiwi/c.jpg"])
    v1 = {
        "version": 1,
        "batches": [
            {
                "batch_id": "b0001",
                "run_id": "r1",
                "committed_at": "2026-11-01T00:00:00+00:00",
                "images": 2,
                "features_rows": 2,
                "rejects_rows": 0,
                "features": "features/batch=b0001/",
                "rejects": "rejects/batch=b0001/",
                "keys": ["landing/Apple/a.jpg", "landing/Apple/b.jpg"],
            }
        ],
    }
    bucket.write_json(layout.LEDGER_KEY, v1)
    assert pipeline.count_new_images(bucket, "landing/") == 1  # v1 is read as it is
    batch = planning.plan_batch(bucket, "landing/")
    assert planning.manifest_keys(bucket, batch.batch_id) == ["landing/Kiwi/c.jpg"]
    state = ledger.load(bucket)
    assert state.version == 2 and state.batch_ids() == ["b0001"]
    migrated = state.batches[0]
    assert (migrated["images"], migrated["features_rows"], migrated["committed_at"]) == (
        2,
        2,
        "2026-11-01T00:00:00+00:00",
    )
    assert migrated["landing_cleared"] is True  # the committed images left landing, their copies kept
    assert bucket.list_keys("landing/") == ["landing/Kiwi/c.jpg"]
    kept = planning.read_entries(bucket, "b0001")
    assert [bucket.key_of(e.source) for e in kept] == ["landing/Apple/a.jpg", "landing/Apple/b.jpg"]
    assert all(bucket.read_bytes(bucket.key_of(e.read)) == b"jpeg bytes" for e in kept)
    assert batch.committed_batches == ["b0001"] and batch.committed_features_rows == 2


# ----------------------------------------------------------------------------- crash points


def _fail_after(monkeypatch, target, name: str, calls: int):
    """Make target.name raise after `calls` successful calls (a crash at that point)."""
    original = getattr(target, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        if count["n"] >= calls:
            raise RuntimeError(f"crash in {name}")
        count["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


IMAGES_3 = ["landing/Apple/a.jpg", "landing/Apple/b.jpg", "landing/Kiwi/c.jpg"]


def _committed_sources(bucket) -> list[str]:
    state = ledger.load(bucket)
    return sorted(k for b in state.batch_ids() for k in planning.manifest_keys(bucket, b))


@pytest.mark.parametrize("crash", ["claim copy", "after ledger write", "mid clear", "before cleared flag"])
def test_no_image_is_lost_or_processed_twice_across_a_crash(bucket, monkeypatch, crash):
    land(bucket, IMAGES_3)
    with monkeypatch.context() as patch:
        if crash == "claim copy":
            _fail_after(patch, Bucket, "copy_if_unchanged", 1)
            with pytest.raises(RuntimeError):
                planning.plan_batch(bucket, "landing/")
            batch = None
        else:
            batch = planning.plan_batch(bucket, "landing/")
            if crash == "after ledger write":
                _fail_after(patch, planning, "clear_landing", 0)
            elif crash == "mid clear":
                _fail_after(patch, Bucket, "delete_if_unchanged", 1)
            else:
                _fail_after(patch, planning, "mark_cleared", 0)
            with pytest.raises(RuntimeError):
                pipeline.commit(bucket, batch, OK_FEATURIZE, "r1")
    # the next run: the crashed batch's images are neither new again nor lost
    land(bucket, ["landing/Pear/d.jpg"])
    following = planning.plan_batch(bucket, "landing/")
    pipeline.commit(bucket, following, OK_FEATURIZE, "r2")
    assert bucket.list_keys("landing/") == []
    assert _committed_sources(bucket) == sorted(IMAGES_3 + ["landing/Pear/d.jpg"])
    if batch is not None:  # committed before the crash: counted once, in its own batch
        assert planning.manifest_keys(bucket, following.batch_id) == ["landing/Pear/d.jpg"]
    assert all(b["landing_cleared"] for b in ledger.load(bucket).batches)


def test_key_rules_are_plain_functions():
    assert keys.extension_of("a/b/IMG.HEIC") == ".heic" and keys.extension_of("a/.DS_Store") == ""
    assert keys.decide("Apple Red 1/x.jpg", 10).label == "Apple Red 1" and keys.decide("x.jpg", 10).label is None
    assert keys.decide("Apple/x.jpg", 10).outcome == "planned"


def _features(bucket, batch_id: str, rows: list[tuple[str, str]]) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"path": [p for p, _ in rows], "sha256": [s for _, s in rows]}), sink)
    bucket.write_bytes(layout.features_prefix(batch_id) + "part-0.parquet", sink.getvalue())


def test_duplicate_contents_are_counted_within_the_batch_and_against_earlier_batches(bucket):
    land(bucket, ["landing/Apple/a.jpg", "landing/Pear/a-again.jpg"])
    first = planning.plan_batch(bucket, "landing/")
    _features(
        bucket,
        first.batch_id,
        [(bucket.uri("landing/Apple/a.jpg"), "aa" * 32), (bucket.uri("landing/Pear/a-again.jpg"), "aa" * 32)],
    )
    committed = pipeline.commit(bucket, first, OK_FEATURIZE, "r1")
    assert committed["duplicate_contents"] == {"within_batch": 1, "of_earlier_batches": 0}
    land(bucket, ["landing/Kiwi/b.jpg", "landing/Kiwi/c.jpg"], body=b"other bytes")
    second = planning.plan_batch(bucket, "landing/")
    _features(
        bucket,
        second.batch_id,
        [(bucket.uri("landing/Kiwi/b.jpg"), "aa" * 32), (bucket.uri("landing/Kiwi/c.jpg"), "cc" * 32)],
    )
    again = pipeline.commit(bucket, second, OK_FEATURIZE, "r2")
    assert again["duplicate_contents"] == {"within_batch": 0, "of_earlier_batches": 1}
    assert pipeline.commit(bucket, second, OK_FEATURIZE, "r2-retry")["duplicate_contents"] == {
        "within_batch": 0,
        "of_earlier_batches": 1,
    }  # its own contents are not "earlier"
