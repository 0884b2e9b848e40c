"""What the featurize job reads: the entries, their bytes, and the rejects known without decoding.

The driver lists before Spark reads: a manifest's entries (or the image files under a folder)
are matched with a Hadoop listing of their folders, so that a missing file, a file that is not
an image type or an empty one is a reject with its reason, and every other entry is read once
by Spark (`binary_files`). An entry Spark returns no row for (deleted since the listing) is a
reject too (`missing_entries`, `unread_rejects`): every entry ends in exactly one output.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fruits_spark import binary_files, hadoop_fs, manifest, paths
from fruits_spark.manifest import Entry
from fruits_spark.runtime import JobError

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What the job reads: the entries, the images DataFrame, and the rejects known without decoding."""

    files: int  # entries (image files to read + entries rejected before reading)
    expected: list[Entry]  # the entries `images` should give a row for
    images: object  # DataFrame (path, length, content, ..., source, label) or None when nothing is readable
    rejects: list[tuple]  # (path, label, reason, size_bytes) of the entries rejected before decoding
    scratch: str | None  # folder of the copies of hidden-named files, removed after the job
    lengths: dict[str, int]  # bytes of every listed read location

    @property
    def readable(self) -> int:
        return len(self.expected)


def plan(spark, *, manifest_uri: str | None, images_uri: str | None) -> Inputs:
    """Read the manifest (or list the folder `images_uri`), split the images over the task slots,
    and find the entries that end as rejects before any decoding (missing, not an image type,
    empty, unread)."""
    if manifest_uri:
        entries = read_manifest(spark, manifest_uri)  # fail fast when missing or malformed
        lengths = read_lengths(spark, entries)
    else:
        entries, lengths = list_images(spark, images_uri)
    to_read, rejects = triage(entries, lengths)
    log.info("%d input files: %d images to read, %d rejected before reading", len(entries), len(to_read), len(rejects))
    binary_files.set_partitioning(spark, len(to_read))
    load_path, scratch = binary_files.stage_hidden(spark, sorted({entry.read for entry in to_read}))
    expected = [entry for entry in to_read if entry.read in load_path]
    unstaged = [entry for entry in to_read if entry.read not in load_path]  # their hidden-name copy failed
    rejects.extend(unread_rejects(spark, unstaged, lengths))
    images = binary_files.read_images(spark, expected, load_path, lengths)
    return Inputs(len(entries), expected, images, rejects, scratch, lengths)


def read_manifest(spark, uri: str) -> list[Entry]:
    """The distinct entries of a manifest (JSON Lines when its name ends in .jsonl, else text)."""
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"manifest not found: {uri}")
    try:
        text = hadoop_fs.read_text(spark, uri)
    except UnicodeDecodeError as exc:
        raise JobError(f"manifest {uri} is not UTF-8 text (byte {exc.start})") from None
    try:
        return manifest.parse(text, uri)
    except manifest.ManifestError as exc:
        raise JobError(f"malformed manifest {uri}: {exc}") from None


def list_images(spark, uri: str) -> tuple[list[Entry], dict[str, int]]:
    """--images: the files with an image extension under `uri` (every file name, as the manifest
    modes read them) and the bytes of each; the label is the parent folder name."""
    found = hadoop_fs.list_tree(spark, uri, threads=binary_files.LISTING_THREADS)
    if found is None:
        raise JobError(f"no such folder or file: {uri}")
    lengths = {paths.canonical_uri(f): size for f, size in found.items()}
    entries = [Entry(f, f, paths.label_of(f)) for f in sorted(lengths) if paths.is_image_path(f)]
    return entries, lengths


def read_lengths(spark, entries: list[Entry]) -> dict[str, int]:
    """Bytes of every existing read location: one listing per folder, a few folders at a time.

    A Hadoop listing, not Spark's: Spark's would hide names starting with `_` or `.`.
    """
    parents = sorted({paths.parent_of(entry.read) for entry in entries})
    if not parents:
        return {}
    with ThreadPoolExecutor(max_workers=min(binary_files.LISTING_THREADS, len(parents))) as pool:
        listings = list(pool.map(functools.partial(hadoop_fs.list_folder, spark), parents))
    return {paths.canonical_uri(f): size for listing in listings for f, size in listing.items()}


def triage(entries: list[Entry], lengths: dict[str, int]) -> tuple[list[Entry], list[tuple]]:
    """(entries to read, reject rows known before reading): missing, not an image type, empty."""
    to_read, rejects = [], []
    for entry in entries:
        size = lengths.get(entry.read)
        if size is None:
            rejects.append((entry.source, entry.label, "file not found", None))
        elif not paths.is_image_path(entry.source):
            rejects.append((entry.source, entry.label, paths.unsupported_type_reason(), size))
        elif size == 0:
            rejects.append((entry.source, entry.label, "empty file (0 bytes)", 0))
        else:
            to_read.append(entry)
    return to_read, rejects


def missing_entries(expected: list[Entry], returned: Counter) -> list[Entry]:
    """The entries of `expected` without a row among `returned` (source path -> rows: featurized
    or failed to decode), as many times as they are short."""
    left = Counter(returned)
    missing = []
    for entry in expected:
        if left[entry.source] > 0:
            left[entry.source] -= 1
        else:
            missing.append(entry)
    return missing


def unread_rejects(spark, entries: list[Entry], lengths: dict[str, int]) -> list[tuple]:
    """Reject rows for listed entries that gave Spark nothing to read, each with its reason."""
    return [(entry.source, entry.label, unread_reason(spark, entry.read), lengths.get(entry.read)) for entry in entries]


def unread_reason(spark, uri: str) -> str:
    """Why a listed file produced no row: Spark's file sources skip zero-byte files."""
    length = hadoop_fs.file_length(spark, uri)
    if length is None:
        return "file disappeared before it could be read"
    if length == 0:
        return "empty file (0 bytes)"
    return f"listed ({length} bytes) but not returned by Spark's binaryFile reader"
