"""A cache of converted models, so that only the first job of a deployment pays for the conversion.

Building MobileNetV2 in Keras and converting it (tf2onnx, OpenVINO) costs ~8 s of one core
before the first image can be featurized, and gives the same bytes every time for the same
inputs. The cache keeps the `PortableModel` under a key that changes with everything that can
change those bytes: the weights (`imagenet`, `none` with its seed, or a weights file's sha256),
the image size, the runtime, the versions of TensorFlow, Keras, the converter and the runtime
itself, and the opset. A cache entry is one file, written under a temporary name and renamed
(local) or written with one PUT (S3): a reader never sees half an entry, and an entry that does
not load is ignored (and overwritten), never trusted.

The cache is a folder given by `featurize.py --model-cache` (local path, file:// or, on EMR,
s3://). Without it every job converts, as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

from fruits_spark import inference

log = logging.getLogger(__name__)

FORMAT = 1  # bump when PortableModel's layout changes
_VERSIONED = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "openvino", "numpy")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def key(*, weights_identity: str, image_size: int, runtime: str) -> str:
    """The cache key: a hash of every input of the conversion (no import of TensorFlow needed)."""
    facts = {
        "format": FORMAT,
        "weights": weights_identity,
        "image_size": int(image_size),
        "runtime": runtime,
        "opset": inference.ONNX_OPSET,
        "versions": {name: _version(name) for name in _VERSIONED},
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode("utf-8")).hexdigest()[:24]
    return f"mobilenetv2-{runtime}-{image_size}-{digest}.npz"


def weights_identity(spec: str, seed: int, weights_file: str | None = None) -> str:
    """What identifies the weights: the name (imagenet), the seed (none), or the file's content."""
    if spec == "none":
        return f"none/seed={seed}"
    if spec == "imagenet":
        return "imagenet"
    if weights_file is None:
        raise ValueError("a weights file needs its local copy to be identified")
    sha = hashlib.sha256()
    with open(weights_file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return f"file/sha256={sha.hexdigest()}"


def entry_name(
    folder: str | None, *, weights: str, seed: int, image_size: int, runtime: str, weights_file: str | None = None
) -> str | None:
    """The cache entry of a model (None without a cache folder); a weights file needs its local copy."""
    if not folder:
        return None
    identity = weights_identity(weights, seed, weights_file)
    return key(weights_identity=identity, image_size=image_size, runtime=runtime)


def dumps(model: inference.PortableModel) -> bytes:
    """An .npz of the payload's parts (bytes kept as uint8 arrays): data only, no pickle, so a
    cache entry can never run code in the driver that loads it."""
    import numpy as np

    parts = {
        "meta": np.frombuffer(
            json.dumps(
                {
                    "runtime": model.runtime,
                    "image_size": model.image_size,
                    "kinds": ["bytes" if isinstance(p, bytes) else "array" for p in model.payload],
                }
            ).encode(),
            dtype=np.uint8,
        )
    }
    for i, part in enumerate(model.payload):
        parts[f"p{i}"] = np.frombuffer(part, dtype=np.uint8) if isinstance(part, bytes) else part
    sink = io.BytesIO()
    np.savez(sink, **parts)
    return sink.getvalue()


def loads(data: bytes, runtime: str, image_size: int) -> inference.PortableModel | None:
    """The cached model, or None when the entry is damaged or not a model of this runtime and size."""
    import numpy as np

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            payload = tuple(
                archive[f"p{i}"].tobytes() if kind == "bytes" else archive[f"p{i}"].copy()
                for i, kind in enumerate(meta["kinds"])
            )
    except Exception as exc:  # noqa: BLE001 - a damaged entry is a miss, never a failure
        log.warning("ignoring an unreadable model cache entry: %s", exc)
        return None
    if meta.get("runtime") != runtime or meta.get("image_size") != image_size:
        log.warning("ignoring a model cache entry that is not a %s model of size %d", runtime, image_size)
        return None
    return inference.PortableModel(runtime, image_size, payload)


def is_local(folder: str) -> bool:
    return "://" not in folder or folder.startswith("file://")


def local_path(folder: str, name: str) -> Path:
    root = folder[len("file://") :] if folder.startswith("file://") else folder
    return Path(root) / name


def read_local(folder: str, name: str) -> bytes | None:
    path = local_path(folder, name)
    return path.read_bytes() if path.is_file() else None


def write_local(folder: str, name: str, data: bytes) -> None:
    path = local_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{name}.", delete=False) as handle:
        handle.write(data)
        partial = handle.name
    os.replace(partial, path)


def join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def describe(model: inference.PortableModel) -> str:
    return f"{model.runtime} model, {model.nbytes / 1e6:.1f} MB"
