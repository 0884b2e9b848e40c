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

# Same rule as is_image_path, for Spark's `rlike` (Java regex).
IMAGE_PATH_REGEX = r"(?i)\.(jpe?g|png)$"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")


def is_image_path(path: str) -> bool:
    """True for *.jpg, *.jpeg and *.png in any letter case."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def canonical_uri(uri: str, *, encoded: bool = False) -> str:
    """Return the form Spark's binaryFile source gives in its ``path`` column.

    ``encoded=True`` for strings from ``inputFiles()`` (percent-encoded URIs).
    Bare local paths become ``file:/abs/path``.
    """
    if encoded:
        uri = unquote(uri)
    if uri.startswith("file://"):
        rest = uri[len("file://"):]
        if rest.startswith("/"):  # file:///x -> file:/x (empty authority)
            return "file:" + posixpath.normpath(rest)
        return uri
    if uri.startswith("file:"):
        return "file:" + posixpath.normpath(uri[len("file:"):])
    if _SCHEME.match(uri):
        return uri
    return "file:" + os.path.abspath(uri)


def label_of(uri: str) -> str:
    """The class label is the image's parent folder name, exactly as on disk."""
    parts = uri.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def parent_of(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def escape_glob(uri: str) -> str:
    """Escape Hadoop glob characters so a file named `a[1].jpg` is read literally."""
    return _GLOB_CHARS.sub(r"\\\1", uri)

