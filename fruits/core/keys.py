"""What planning does with each object under the landing prefix: plan it, ignore it or reject it.

Every key ends in exactly one of the three, with a reason for the last two, so no key can fail a
batch or block the next run:

* ignored: not an accepted image type (`.txt`, `.DS_Store`, no extension); counted by extension
  and left where it is (it is not ours to move);
* rejected at planning: a name the pipeline will not carry safely (control characters or
  Unicode line separators, empty, `.` or `..` segments, `//`, an `s3://` inside, a segment over
  255 bytes or a key over `MAX_KEY_BYTES`), zero bytes, or over the size limit; recorded with
  the batch like featurize's rejects;
* planned: everything else. Its label is the folder holding it (`fruits_spark.paths.label_of`,
  the jobs' own rule: `Test/Apple Red 1/r_1_100.jpg` is `Apple Red 1`); an image directly under
  the prefix has no label.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from fruits.contract import IMAGE_EXTENSIONS
from fruits_spark.paths import label_of

# The longest segment most file systems accept (ext4, APFS, NTFS count 255 bytes or characters).
MAX_SEGMENT_BYTES = 255
# Keys are at most 1,024 bytes in S3; the staged copy's name never depends on the key, but
# reports, rejects and logs carry it: a margin for the `s3://bucket/` in front.
MAX_KEY_BYTES = 960
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024  # a phone photo is 2-12 MB; 64 MiB is not a photo


@dataclass(frozen=True)
class Decision:
    outcome: str  # "planned" | "ignored" | "rejected"
    reason: str = ""
    label: str | None = None


def extension_of(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return "." + ext.lower() if dot and stem.strip(".") else ""


def unsafe_name_reason(relative: str) -> str | None:
    """Why a key (relative to the landing prefix) cannot be carried safely, or None."""
    for char in relative:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") or char in "\u0085\ufeff":
            return f"unsafe name: control or line-separator character U+{ord(char):04X}"
    if "://" in relative:
        return "unsafe name: contains a URI scheme ('://')"
    if len(relative.encode("utf-8")) > MAX_KEY_BYTES:
        return f"unsafe name: key longer than {MAX_KEY_BYTES} bytes"
    segments = relative.split("/")
    if any(s == "" for s in segments):
        return "unsafe name: empty path segment ('//' or a leading '/')"
    if any(s in (".", "..") for s in segments):
        return "unsafe name: '.' or '..' path segment"
    if any(len(s.encode("utf-8")) > MAX_SEGMENT_BYTES for s in segments):
        return f"unsafe name: a path segment longer than {MAX_SEGMENT_BYTES} bytes"
    if segments[-1] != segments[-1].strip():
        return "unsafe name: file name starts or ends with white space"
    return None


def decide(relative: str, size: int, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Decision:
    """Plan, ignore or reject one object, from its key relative to the landing prefix and size."""
    extension = extension_of(relative.rstrip())
    if extension not in IMAGE_EXTENSIONS:
        return Decision("ignored", f"not an image type ({extension or 'no extension'})")
    unsafe = unsafe_name_reason(relative)
    if unsafe:
        return Decision("rejected", unsafe, label_of(relative))
    if size == 0:
        return Decision("rejected", "empty file (0 bytes)", label_of(relative))
    if size > max_bytes:
        return Decision("rejected", f"too large ({size:,} bytes > {max_bytes:,})", label_of(relative))
    return Decision("planned", label=label_of(relative))
