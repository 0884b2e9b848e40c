"""The manifest formats featurize.py reads (fruits_spark.manifest; no Spark needed), the label rule
(fruits_spark.paths.label_of) and the DAG's side of both (fruits.core.manifest, fruits.core.keys)."""

from __future__ import annotations

import json

import pytest

from fruits.core import keys
from fruits.core import manifest as dag_manifest
from fruits_spark import paths
from fruits_spark.manifest import Entry, ManifestError, dumps, parse

SOURCE = "s3://bucket/landing/Apple/_DSC0001.JPG"
READ = "s3://bucket/batches/b1/images/000001.jpg"


def line(**fields) -> str:
    record = {"source": SOURCE, "read": READ, "label": "Apple", "size": 12, "etag": '"abc"'} | fields
    return json.dumps(record, ensure_ascii=True)


def test_jsonl_entries_keep_source_read_and_label_null_included():
    text = "\n".join([line(), line(source="s3://bucket/landing/top.png", read="/w/images/000002.png", label=None)])
    assert parse(text + "\n", "s3://bucket/batches/b1/manifest.jsonl") == [
        Entry(SOURCE, READ, "Apple", 12, '"abc"'),
        Entry("s3://bucket/landing/top.png", "file:/w/images/000002.png", None, 12, '"abc"'),
    ]


def test_jsonl_lines_split_on_newline_only():
    """Names holding U+2028, U+0085 or a lone CR, written raw (ensure_ascii=False) or escaped: one
    entry each; CRLF line ends are fine."""
    odd = [
        "s3://b/landing/A/x\u2028y.jpg",
        "s3://b/landing/A/x\x85y.jpg",
        "s3://b/landing/A/x\ry.jpg",
        "s3://b/landing/A/x\x1cy.jpg",
    ]
    raw = [json.dumps({"source": s, "read": s, "label": "A"}, ensure_ascii=False) for s in odd]
    escaped = [json.dumps({"source": s + ".2", "read": s, "label": "A"}) for s in odd]
    entries = parse("\r\n".join(raw + escaped) + "\r\n", "m.JSONL")
    assert [e.source for e in entries] == odd + [s + ".2" for s in odd]


def test_text_manifest_lines_split_on_newline_only_and_label_is_the_parent_folder():
    text = "# images\n\ns3://b/landing/Pêche/a\u2028b.jpg\r\ns3://b/landing/Pêche/a\u2028b.jpg\n/tmp/x/_DSC1.JPG\n"
    assert parse(text, "manifest.txt") == [
        Entry("s3://b/landing/Pêche/a\u2028b.jpg", "s3://b/landing/Pêche/a\u2028b.jpg", "Pêche"),
        Entry("file:/tmp/x/_DSC1.JPG", "file:/tmp/x/_DSC1.JPG", "x"),
    ]


def test_identical_jsonl_lines_count_once_but_a_conflicting_source_is_refused():
    assert parse("\n".join([line(), line()]), "m.jsonl") == [Entry(SOURCE, READ, "Apple", 12, '"abc"')]
    with pytest.raises(ManifestError, match=r"^line 3: source .*_DSC0001.JPG is already on line 1 with another"):
        parse("\n".join([line(), "", line(label="Pear")]), "m.jsonl")


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"source": "s3://b/x.jpg", "read": ', "line 2: not a JSON object (Expecting value at column 36)"),
        ('["s3://b/x.jpg"]', "line 2: not a JSON object (list)"),
        ('{"read": "s3://b/x.jpg", "label": null}', "line 2: 'source' must be a non-empty string"),
        ('{"source": "s3://b/x.jpg", "read": "", "label": null}', "line 2: 'read' must be a non-empty string"),
        (
            '{"source": "s3://b/x.jpg", "read": "s3://b/y.jpg"}',
            "line 2: 'label' is missing (null for an unlabelled image)",
        ),
        ('{"source": "s3://b/x.jpg", "read": "s3://b/y.jpg", "label": 3}', "line 2: 'label' must be a string or null"),
        (
            '{"source": "s3://b/x.jpg", "read": "s3://b/y.jpg", "label": null, "size": -1}',
            "line 2: 'size' must be a whole number of bytes or null",
        ),
        (
            '{"source": "s3://b/x.jpg", "read": "s3://b/y.jpg", "label": null, "size": true}',
            "line 2: 'size' must be a whole number of bytes or null",
        ),
        (
            '{"source": "s3://b/x.jpg", "read": "s3://b/y.jpg", "label": null, "etag": 7}',
            "line 2: 'etag' must be a string or null",
        ),
        ("s3://b/landing/A/x.jpg", "line 2: not a JSON object (Expecting value at column 1)"),
    ],
)
def test_a_malformed_jsonl_line_is_named(bad, message):
    with pytest.raises(ManifestError) as raised:
        parse(line() + "\n" + bad + "\n" + line(source="s3://b/z.jpg"), "m.jsonl")
    assert str(raised.value) == message


def test_what_planning_writes_is_what_featurize_reads():
    """One format: the DAG's writer and reader are the job's (fruits.core.manifest re-exports them)."""
    assert dag_manifest.Entry is Entry and dag_manifest.dumps is dumps
    written = [
        Entry(SOURCE, READ, "Apple Red 1", 12, '"abc"'),
        Entry("s3://bucket/landing/l\u2028s.jpg", "s3://bucket/batches/b1/images/000002.jpg", None, 0, '"d"'),
    ]
    text = dumps(written)
    assert text.count("\n") == 2 and text.isascii()
    assert parse(text, "s3://bucket/batches/b1/manifest.jsonl") == written
    assert dag_manifest.entries(text, "bucket") == written


def test_the_dag_reads_back_only_entries_of_its_bucket_with_size_and_etag():
    with pytest.raises(ManifestError, match="s3://other/x.jpg is not in the batch's bucket bucket"):
        dag_manifest.entries(line(source="s3://other/x.jpg"), "bucket")
    with pytest.raises(ManifestError, match="s3://other/y.jpg is not in the batch's bucket bucket"):
        dag_manifest.entries(line(read="s3://other/y.jpg"), "bucket")
    with pytest.raises(ManifestError, match="has no size or ETag"):
        dag_manifest.entries(json.dumps({"source": SOURCE, "read": READ, "label": None}), "bucket")
    assert dag_manifest.entries(line(read="/w/images/000001.jpg"), "bucket")[0].read == "file:/w/images/000001.jpg"


# The label rule, once for both sides: the folder holding the image (Fruits-360: Test/<Label>/r_<n>_100.jpg).
@pytest.mark.parametrize(
    "path, label",
    [
        ("Apple Red 1/r_1_100.jpg", "Apple Red 1"),
        ("Test/Apple Red 1/r_1_100.jpg", "Apple Red 1"),  # a dataset's own top folder is no label
        ("Kiwi/2026-11-30/r_2_100.png", "2026-11-30"),  # nested: the innermost folder, wherever it is
        ("Pear/x.jpg/y.jpg", "x.jpg"),
        ("loose.jpg", None),  # right under the landing prefix
        ("s3://bucket/landing/Test/Pêche de vigne/r_3_100.jpg", "Pêche de vigne"),
        ("file:/data/fruits-360/Test/Apple Red 1/r_1_100.jpg", "Apple Red 1"),
    ],
)
def test_the_label_is_the_folder_holding_the_image(path, label):
    assert paths.label_of(path) == label


def test_planning_and_the_text_manifest_label_nested_folders_alike():
    """The DAG's planning (a key relative to the landing prefix) and featurize.py's text manifest (a URI)
    give an image the same label, at any depth."""
    for relative in ("Apple Red 1/r_1_100.jpg", "Test/Apple Red 1/r_1_100.jpg", "Kiwi/2026/11-30/deep.jpg"):
        planned = keys.decide(relative, 10)
        assert planned.outcome == "planned"
        [entry] = parse(f"s3://bucket/landing/{relative}\n", "list.txt")
        assert planned.label == entry.label == paths.label_of(relative)
    assert keys.decide("loose.jpg", 10).label is None
    assert keys.decide("Test/Kiwi/empty.jpg", 0).label == "Kiwi"  # rejects carry the label too
