"""fruits_spark.image_inputs and binary_files: which entries the featurize job reads, and how Spark
reads exactly those (the parts that need no Spark session)."""

from __future__ import annotations

from collections import Counter

import pytest

from fruits_spark import binary_files, image_inputs, paths
from fruits_spark.manifest import Entry
from fruits_spark.runtime import executor_cores


def test_featurize_loads_whole_folders_only_where_that_reads_exactly_the_wanted_files():
    """A folder is listed whole by Spark (fast) only when that returns exactly the wanted files."""
    listed = {
        f: 1
        for f in (
            "file:/d/A/1.jpg",
            "file:/d/A/2.jpg",
            "file:/d/B/1.jpg",
            "file:/d/B/notes.txt",
            "file:/d/C/_DSC1.JPG",
            "file:/d/C/2.jpg",
            "file:/d/D/_raw/3.jpg",
            "file:/d/D/4.jpg",
            "file:/d/E/5.jpg",
            "file:/d/E/sub/6.jpg",
            "file:/d/AB/7.jpg",
        )
    }
    listed["file:/d/E/empty.jpg"] = 0
    wanted = [
        "file:/d/A/1.jpg",
        "file:/d/A/2.jpg",
        "file:/d/B/1.jpg",
        "file:/d/C/2.jpg",
        "file:/d/D/_raw/3.jpg",
        "file:/d/D/4.jpg",
        "file:/d/E/5.jpg",
        "file:/d/E/sub/6.jpg",
        "file:/scratch/000000.jpg",
    ]
    folders, files = binary_files.folders_to_load(wanted, listed)
    # A: all wanted (AB/7.jpg beside it is not under it); C: its hidden file is read from a scratch
    # copy; E: its empty file is skipped by Spark's scan anyway, E/sub is inside E; scratch: only copies
    assert sorted(folders) == ["file:/d/A", "file:/d/C", "file:/d/E", "file:/scratch"]
    # B holds an unwanted file; D's wanted file below a hidden folder would be skipped by Spark
    assert sorted(files) == ["file:/d/B/1.jpg", "file:/d/D/4.jpg", "file:/d/D/_raw/3.jpg"]


def test_featurize_finds_the_entries_spark_returned_no_row_for_as_often_as_they_are_short():
    """An entry without an output row (a file deleted since the listing) becomes a reject, never a loss:
    rows are matched by source path, counting duplicates."""
    expected = [
        Entry("s3://b/A/1.jpg", "file:/x/1.jpg", "A"),
        Entry("s3://b/A/2.jpg", "file:/x/2.jpg", "A"),
        Entry("s3://b/A/2.jpg", "file:/x/3.jpg", "A"),
        Entry("s3://b/B/4.jpg", "file:/x/4.jpg", "B"),
    ]
    assert image_inputs.missing_entries(expected, Counter(e.source for e in expected)) == []
    returned = Counter(["s3://b/A/1.jpg", "s3://b/A/2.jpg"])
    assert image_inputs.missing_entries(expected, returned) == expected[2:]
    assert image_inputs.missing_entries(expected, Counter()) == expected


def test_triage_rejects_missing_non_image_and_empty_entries_before_reading():
    """Only listed, non-empty files of an image type are read; the others get their reason and size."""
    entries = [
        Entry("s3://b/A/ok.jpg", "file:/x/ok.jpg", "A"),
        Entry("s3://b/A/gone.jpg", "file:/x/gone.jpg", "A"),
        Entry("s3://b/A/notes.txt", "file:/x/notes.txt", "A"),
        Entry("s3://b/A/empty.png", "file:/x/e.png", None),
    ]
    lengths = {"file:/x/ok.jpg": 10, "file:/x/notes.txt": 5, "file:/x/e.png": 0}
    to_read, rejects = image_inputs.triage(entries, lengths)
    assert to_read == entries[:1]
    assert rejects == [
        ("s3://b/A/gone.jpg", "A", "file not found", None),
        ("s3://b/A/notes.txt", "A", paths.unsupported_type_reason(), 5),
        ("s3://b/A/empty.png", None, "empty file (0 bytes)", 0),
    ]


@pytest.mark.parametrize(
    ("images", "slots", "partitions"), [(0, 2, 2), (10, 2, 2), (4000, 2, 2), (4001, 2, 4), (2000 * 8 + 1, 4, 12)]
)
def test_partitions_are_a_multiple_of_the_slots_with_a_bounded_count_of_images(images, slots, partitions):
    assert binary_files.partition_count(images, slots) == partitions
    assert images <= partitions * binary_files.MAX_IMAGES_PER_PARTITION


@pytest.mark.parametrize(
    ("conf", "cores"),
    [
        ({"spark.master": "local[3]"}, 3),
        ({"spark.master": "local"}, 1),
        ({"spark.master": "local[2, 4]"}, 2),
        ({"spark.master": "yarn", "spark.executor.cores": "4"}, 4),
        ({"spark.master": "yarn"}, None),
        ({"spark.master": "local-cluster[2,1,1024]"}, None),
    ],
)
def test_executor_cores_come_from_the_submitted_master_or_executor_cores(conf, cores):
    assert executor_cores(conf) == cores
