"""The manifest formats featurize.py reads (fruits_spark.manifest; no Spark needed)."""

from __future__ import annotations

import json

import pytest

from fruits_spark.manifest import Entry, ManifestError, parse

SOURCE = "s3://bucket/landing/Apple/_DSC0001.JPG"
READ = "s3://bucket/batches/b1/images/000001.jpg"


def line(**fields) -> str:
    record = {"source": SOURCE, "read": READ, "label": "Apple", "size": 12, "etag": '"abc"'} | fields
    return json.dumps(record, ensure_ascii=True)


def test_jsonl_entries_keep_source_read_and_label_null_included():
    text = "\n".join([line(), line(source="s3://bucket/landing/top.png", read="/w/images/000002.png", label=None)])
    assert parse(text + "\n", "s3://bucket/batches/b1/manifest.jsonl") == [
        Entry(SOURCE, READ, "Apple"),
        Entry("s3://bucket/landing/top.png", "file:/w/images/000002.png", None),
    ]


def test_jsonl_lines_split_on_newline_only():
    """Names holding U+2028, U+0085 or a lone CR, written raw (ensure_ascii=False) or escaped: one
    entry each; CRLF line ends are fine."""
    odd = ["s3://b/landing/A/x\u2028y.jpg", "s3://b/landing/A/x\x85y.jpg", "s3://b/landing/A/x\ry.jpg",
           "s3://b/landing/A/x\x1cy.jpg"]
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
    assert parse("\n".join([line(), line()]), "m.jsonl") == [Entry(SOURCE, READ, "Apple")]
    with pytest.raises(ManifestError, match=r"^line 3: source .*_DSC0001.JPG is already on line 1 with another"):
        parse("\n".join([line(), "", line(label="Pear")]), "m.jsonl")


@pytest.mark.parametrize("bad, message", [
    ('{"source": "s3://b/x.jpg", "read": ', "line 2: not a JSON object (Expecting value at column 36)"),
    ('["s3://b/x.jpg"]', "line 2: not a JSON object (list)"),
    ('{"read": "s3://b/x.jpg", "label": null}', "line 2: 'source' must be a non-empty string"),
    ('{"source": "s3://b/x.jpg", "read": "", "label": null}', "line 2: 'read' must be a non-empty string"),
    ('{"source": "s3://b/x.jpg", "read": "s3://b/y.jpg"}', "line 2: 'label' is missing (null for an unlabelled image)"),
    ('{"source": "s3://b/x.jpg", "read": "s3://b/y.jpg", "label": 3}', "line 2: 'label' must be a string or null"),
    ("s3://b/landing/A/x.jpg", "line 2: not a JSON object (Expecting value at column 1)"),
])
def test_a_malformed_jsonl_line_is_named(bad, message):
    with pytest.raises(ManifestError) as raised:
        parse(line() + "\n" + bad + "\n" + line(source="s3://b/z.jpg"), "m.jsonl")
    assert str(raised.value) == message
