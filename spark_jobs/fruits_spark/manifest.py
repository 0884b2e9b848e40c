"""The manifest: what featurize.py is asked to read, in its two formats (the one definition of both).

* ``*.jsonl`` (written by the DAG's planning, `fruits.core.manifest`): one JSON object per line,
  ``{"source": ..., "read": ..., "label": ... or null, "size": ..., "etag": ...}``.
  `source` is the image's identity (the ``path`` column of every output), `read` is where
  its bytes are (a copy under a safe name), `label` is the manifest's (null: unlabelled);
  `size` and `etag` are the landing object's as planned (the DAG needs them to clear the landing
  prefix; the job does not, so a hand-written manifest may leave them out).
* anything else: plain text, one image URI per line; blank lines and ``# comments`` are
  skipped; the label is the parent folder name (`paths.label_of`).

Lines are split on "\\n" only and written with `ensure_ascii`, so that no character of a name
(CR, U+2028, U+0085...) can start a line of its own. Pure Python (no Spark), so that the rules
are tested on their own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from fruits_spark import paths


@dataclass(frozen=True)
class Entry:
    """One image to featurize: its identity, where its bytes are, its label (None: unlabelled) and
    the landing object's size and ETag as planned (None when the manifest does not say)."""

    source: str
    read: str
    label: str | None
    size: int | None = None
    etag: str | None = None


class ManifestError(ValueError):
    """A manifest that cannot be trusted: the message names the line."""


def is_jsonl(uri: str) -> bool:
    return uri.lower().endswith(".jsonl")


def parse(text: str, uri: str) -> list[Entry]:
    """The distinct entries of a manifest, in file order (the format follows the file name)."""
    return parse_jsonl(text) if is_jsonl(uri) else parse_text(text)


def dumps(records) -> str:
    """JSON Lines of dataclass records (manifest entries, the DAG's planning rejects), ASCII only."""
    return "".join(json.dumps(asdict(r), ensure_ascii=True, sort_keys=True) + "\n" for r in records)


def lines(text: str):
    """(line number, line) of every line, split on "\\n" only: str.splitlines() would also split
    on U+2028, U+0085, \\x1c... inside a name. A CRLF line end is accepted."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def parse_text(text: str) -> list[Entry]:
    entries: dict[str, Entry] = {}
    for _, line in lines(text):
        line = line.strip()
        if line and not line.startswith("#"):
            uri = paths.canonical_uri(line)
            entries.setdefault(uri, Entry(uri, uri, paths.label_of(uri)))
    return list(entries.values())


def parse_jsonl(text: str) -> list[Entry]:
    entries: dict[str, tuple[int, Entry]] = {}
    for number, line in lines(text):
        if not line.strip():
            continue
        entry = _entry(number, line)
        first = entries.setdefault(entry.source, (number, entry))
        if first[1] != entry:
            raise ManifestError(
                f"line {number}: source {entry.source} is already on line {first[0]} "
                "with another read location, label, size or ETag"
            )
    return [entry for _, entry in entries.values()]


def _entry(number: int, line: str) -> Entry:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"line {number}: not a JSON object ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"line {number}: not a JSON object ({type(record).__name__})")
    for field in ("source", "read"):
        if not isinstance(record.get(field), str) or not record[field].strip():
            raise ManifestError(f"line {number}: '{field}' must be a non-empty string")
    if "label" not in record:
        raise ManifestError(f"line {number}: 'label' is missing (null for an unlabelled image)")
    label, size, etag = record["label"], record.get("size"), record.get("etag")
    if label is not None and not isinstance(label, str):
        raise ManifestError(f"line {number}: 'label' must be a string or null")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ManifestError(f"line {number}: 'size' must be a whole number of bytes or null")
    if etag is not None and not isinstance(etag, str):
        raise ManifestError(f"line {number}: 'etag' must be a string or null")
    return Entry(paths.canonical_uri(record["source"]), paths.canonical_uri(record["read"]), label, size, etag)
