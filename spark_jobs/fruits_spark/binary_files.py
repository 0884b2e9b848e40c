"""Spark's binaryFile source over exactly the files a job wants, split by count of files.

Spark's file sources skip names starting with `_` or `.` (even when named explicitly) and
zero-byte files, check every file named explicitly one by one, and pack files into partitions
by bytes. The featurize job wants every listed image exactly once, cheaply, and about as many
images in each task: hidden-named files are read from plain-named copies (`stage_hidden`),
folders are loaded whole where that gives exactly the wanted files (`folders_to_load`), and
partitions hold a count of files (`set_partitioning`).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

from fruits_spark import hadoop_fs, paths
from fruits_spark.manifest import Entry
from fruits_spark.runtime import local_frame, task_slots

log = logging.getLogger(__name__)

# One partition holds at most this many images, so that a lost task is cheap to redo.
MAX_IMAGES_PER_PARTITION = 2000
# Folders listed, or hidden-named files copied, at the same time by the driver.
LISTING_THREADS = 8


def partition_count(images: int, slots: int) -> int:
    """A multiple of the task slots, with at most MAX_IMAGES_PER_PARTITION images per partition."""
    return slots * max(1, math.ceil(images / (slots * MAX_IMAGES_PER_PARTITION)))


def set_partitioning(spark, images: int) -> int:
    """Pack files by count, not by bytes: `partition_count` splits, about as many images in each.

    Spark checks each of the files it is given in a listing job of one task per file by default
    (9 s for 2,000 local files on 2 cores); a few tasks per slot do it in a third of that.
    """
    slots = task_slots(spark)
    partitions = partition_count(images, slots)
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(1 << 40))
    spark.conf.set("spark.sql.files.minPartitionNum", str(partitions))
    spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(max(8, 4 * slots)))
    return partitions


def stage_hidden(spark, reads: list[str]) -> tuple[dict[str, str], str | None]:
    """(read location -> the path Spark loads, scratch folder or None).

    Spark's file sources skip names starting with `_` or `.` even when named explicitly, so
    those files (camera names such as `_DSC0001.JPG`) are read from a copy under a plain name
    in a scratch folder every executor can read; the caller removes it after the job. A file
    that cannot be copied (gone since the listing) has no load path.
    """
    hidden = [uri for uri in reads if paths.hidden_from_spark(uri)]
    load_path = {uri: uri for uri in reads if not paths.hidden_from_spark(uri)}
    if not hidden:
        return load_path, None
    scratch = hadoop_fs.scratch_folder(spark)
    copies = {
        uri: f"{scratch}/{index:06d}{os.path.splitext(paths.file_name(uri))[1].lower()}"
        for index, uri in enumerate(hidden)
    }
    log.info("copying %d file(s) whose names Spark hides (leading _ or .) to %s", len(hidden), scratch)

    def copy(item: tuple[str, str]) -> tuple[str, str] | None:
        try:
            hadoop_fs.copy(spark, *item)
            return item
        except Exception as exc:  # noqa: BLE001 - gone since the listing: an unread file, reported later
            log.warning("cannot copy %s: %s", item[0], str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None

    with ThreadPoolExecutor(max_workers=min(LISTING_THREADS, len(hidden))) as pool:
        copied = [item for item in pool.map(copy, copies.items()) if item]
    load_path.update({uri: paths.canonical_uri(target) for uri, target in copied})
    return load_path, scratch


def folders_to_load(wanted: list[str], listed: dict[str, int]) -> tuple[list[str], list[str]]:
    """(folders to load whole, files to load one by one) covering exactly `wanted`.

    Spark lists a folder on the JVM in one pass, while every file named explicitly costs it a
    file-status check (~3-5 ms of a core each: 1,200 files took 4-7 s here). A folder is loaded
    whole when Spark's recursive listing of it returns exactly the wanted files under it: every
    non-empty file under it is wanted or hidden from Spark (a name starting with `_` or `.`
    anywhere below the folder; Spark's scans skip empty files too), and no wanted file sits below
    a hidden folder. Everything else is named. Lookups go through the sorted listing, so the
    cost grows with the files, not with files x folders.
    """
    wanted_set = set(wanted)
    ordered = sorted(listed)

    def files_under(folder: str) -> list[str]:
        # "0" sorts right after "/": the range is every path starting with folder + "/"
        return ordered[bisect.bisect_left(ordered, folder + "/") : bisect.bisect_left(ordered, folder + "0")]

    def hidden_below(folder: str, path: str) -> bool:
        return any(part.startswith(("_", ".")) for part in path[len(folder) + 1 :].split("/"))

    def ancestors(path: str):
        while "/" in path:
            path = paths.parent_of(path)
            yield path

    chosen: set[str] = set()
    for folder in sorted({paths.parent_of(f) for f in wanted}, key=lambda f: (len(f), f)):
        if any(parent in chosen for parent in ancestors(folder)) or paths.hidden_from_spark(folder):
            continue
        under = [f for f in files_under(folder) if listed[f] > 0 or f in wanted_set]
        if all(f in wanted_set or hidden_below(folder, f) for f in under) and not any(
            hidden_below(folder, f) for f in under if f in wanted_set
        ):
            chosen.add(folder)
    files = [f for f in wanted if not any(parent in chosen for parent in ancestors(f))]
    return sorted(chosen), files


def load_binary(spark, wanted: list[str], listed: dict[str, int]):
    """binaryFile over exactly the `wanted` files: whole folders where that is exact, else by name."""
    folders, files = folders_to_load(wanted, listed)
    reader = spark.read.format("binaryFile")
    parts = []
    if folders:
        parts.append(reader.option("recursiveFileLookup", "true").load([paths.escape_glob(f) for f in folders]))
    if files:
        parts.append(spark.read.format("binaryFile").load([paths.escape_glob(f) for f in files]))
    log.info(
        "reading %d image file(s): %d folder(s) listed whole, %d file(s) by name", len(wanted), len(folders), len(files)
    )
    return parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])


def read_images(spark, expected: list[Entry], load_path: dict[str, str], listed: dict[str, int]):
    """binaryFile DataFrame of the `expected` entries' bytes (each has a `load_path`) joined to
    their source and label, or None when there are none.

    One row per entry, also when two entries share a read location. Whether Spark returned a
    row for every entry is checked once the features are written (`image_inputs.missing_entries`),
    not by a pass over the files beforehand: nearly always it did.
    """
    from pyspark.sql import functions as F

    if not expected:
        return None
    found = [(load_path[e.read], e.source, e.label) for e in expected]
    loaded = load_binary(spark, sorted({read for read, _, _ in found}), listed)
    frame = local_frame(spark, found, [("read_path", "string"), ("source", "string"), ("label", "string")])
    return loaded.join(F.broadcast(frame), loaded["path"] == frame["read_path"])
