"""URI rules shared by the driver and the executors.

Spark reports a file's path as Hadoop's ``Path.toString()`` (``file:/a b/x.jpg``,
``s3://bucket/a b/x.jpg``: no percent-encoding), while ``DataFrame.inputFiles()`` returns
``Path.toUri().toString()`` (``file:///a%20b/x.jpg``) and users write manifests in either
form or as bare local paths. Everything is reduced to the first form before comparing.
"""

from __future__ import annotations

import os
import posixpath
import re
from urllib.parse import unquote

from fruits_spark.interface import IMAGE_EXTENSIONS

# Same rule as is_image_path, for Spark's `rlike` (Java regex), derived from the one list.
IMAGE_PATH_REGEX = r"(?i)\.(" + "|".join(re.escape(ext[1:]) for ext in IMAGE_EXTENSIONS) + r")$"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")


def is_image_path(path: str) -> bool:
    """True for the accepted image extensions (interface.IMAGE_EXTENSIONS) in any letter case."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def unsupported_type_reason() -> str:
    """The reject reason of a manifest entry whose name has no accepted image extension."""
    *first, last = IMAGE_EXTENSIONS
    return f"unsupported file type (expected {', '.join(first)} or {last})"


def hidden_from_spark(uri: str) -> bool:
    """True when Spark's file sources would skip this file even when named explicitly.

    Spark's file index drops names starting with `_` or `.` (its rule for `_SUCCESS`,
    `.crc` files...): camera files such as `_DSC0001.JPG` included. Such files are read
    from a copy under a plain name (featurize.py).
    """
    return file_name(uri).startswith(("_", "."))


def file_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def canonical_uri(uri: str, *, encoded: bool = False) -> str:
    """Return the form Spark's binaryFile source gives in its ``path`` column.

    ``encoded=True`` for strings from ``inputFiles()`` (percent-encoded URIs).
    Bare local paths become ``file:/abs/path``.
    """
    if encoded:
        uri = unquote(uri)
    if uri.startswith("file://"):
        rest = uri[len("file://") :]
        if rest.startswith("/"):  # file:///x -> file:/x (empty authority)
            return "file:" + posixpath.normpath(rest)
        return uri
    if uri.startswith("file:"):
        return "file:" + posixpath.normpath(uri[len("file:") :])
    if _SCHEME.match(uri):
        return uri
    return "file:" + os.path.abspath(uri)


def label_of(path: str) -> str | None:
    """The class label: the name of the folder holding the image, exactly as written (spaces kept).

    The one rule for every input: Fruits-360 keeps its images as `Test/<Label>/r_<n>_100.jpg`, so
    `landing/Apple Red 1/x.jpg` and `landing/Test/Apple Red 1/x.jpg` are both `Apple Red 1`. The
    DAG's planning applies it to a key relative to the landing prefix (an image right under the
    prefix has no folder: None), featurize.py to a URI (text manifests, --images).
    """
    folder, _, _ = path.rstrip("/").rpartition("/")
    return folder.rpartition("/")[2] or None


def parent_of(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def escape_glob(uri: str) -> str:
    """Escape Hadoop glob characters so a file named `a[1].jpg` is read literally."""
    return _GLOB_CHARS.sub(r"\\\1", uri)
