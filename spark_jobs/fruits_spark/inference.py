"""Inference runtimes: the Keras MobileNetV2, converted once on the driver, run by the executors.

    onnx        ONNX Runtime (CPU execution provider) on the graph tf2onnx exports (the default)
    openvino    OpenVINO (CPU plugin) on the model OpenVINO's own converter reads from TensorFlow,
                compiled with INFERENCE_PRECISION_HINT f32 (left alone, OpenVINO infers in bf16 on
                CPUs with AVX512-BF16 or AMX, and in f16 on ARM: relative errors of ~5e-2)
    tensorflow  the Keras model itself as a tf.function (what the job ran before ONNX Runtime)

The driver builds the Keras model (weights `imagenet`, `none` or a weights file) and calls
`convert`, which returns a `PortableModel`: the converted model's bytes (onnx, openvino) or the
weights (tensorflow). The job broadcasts it; each Python worker calls `make_batch_predictor`
once and keeps the predictor for all of its batches. Everything that needs TensorFlow (`convert`
and the tensorflow runtime) imports it lazily: workers of the other runtimes never load it.

Every runtime computes in float32 and takes the decoded pixels as uint8: MobileNetV2's
`preprocess_input` is part of the converted graph. tests/integration/test_inference_runtimes.py
checks that all of them give the Keras model's features (1e-4 relative, per image).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ONNX_OPSET = 17


@dataclass(frozen=True)
class Runtime:
    name: str
    module: str  # what a Python worker imports to run the model
    requirement: str  # the package (pinned as in requirements.txt) that provides it
    converter: tuple[tuple[str, str], ...]  # (module, requirement) the driver needs to convert


RUNTIMES: dict[str, Runtime] = {
    "onnx": Runtime("onnx", "onnxruntime", "onnxruntime==1.32.0", (("tf2onnx", "tf2onnx==1.17.0"),)),
    "openvino": Runtime("openvino", "openvino", "openvino==2026.4.1", ()),
    # requirements.txt: the CPU build where that wheel exists (Linux x86_64), `tensorflow` elsewhere.
    "tensorflow": Runtime(
        "tensorflow",
        "tensorflow",
        "tensorflow-cpu==2.21.0"
        if sys.platform == "linux" and platform.machine() == "x86_64"
        else "tensorflow==2.21.0",
        (),
    ),
}
# The fastest runtime that passes the parity test on both kinds of EMR nodes (README,
# "Featurization runtimes"): OpenVINO was as fast on x86_64 but has no wheel for Amazon Linux
# 2023 on aarch64 (Graviton; its aarch64 wheels need glibc 2.35, AL2023 has 2.34).
DEFAULT_RUNTIME = "onnx"


class RuntimeUnavailable(Exception):
    """The Python package of a runtime (or of its converter) is not installed."""


class ConversionError(Exception):
    """The Keras model could not be converted for a runtime (an unsupported operation, ...)."""


@dataclass(frozen=True)
class PortableModel:
    """What the driver broadcasts: everything a worker needs to run the network, and no TensorFlow.

    payload: onnx -> (ONNX model bytes,); openvino -> (IR XML bytes, IR weights bytes);
    tensorflow -> the Keras weights as float32 arrays, in `model.get_weights()` order.
    """

    runtime: str
    image_size: int
    payload: tuple

    @property
    def nbytes(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.nbytes for p in self.payload)


def runtime_of(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r} (choose from {', '.join(RUNTIMES)})") from None


def missing_packages(name: str, *, converting: bool) -> list[str]:
    """Requirements (`package==version`) that `name` lacks in this interpreter, without importing.

    converting: also what the driver needs to convert the Keras model (TensorFlow, the converter).
    """
    runtime = runtime_of(name)
    needed = [(runtime.module, runtime.requirement)]
    if converting:
        needed += [("tensorflow", RUNTIMES["tensorflow"].requirement), *runtime.converter]
    missing = []
    for module, requirement in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found and requirement not in missing:
            missing.append(requirement)
    return missing


def require(name: str, *, converting: bool = False) -> None:
    """Raise RuntimeUnavailable, naming what to install, if `name` cannot run here."""
    missing = missing_packages(name, converting=converting)
    if missing:
        raise RuntimeUnavailable(
            f"runtime {name!r} needs the Python package(s) {', '.join(missing)} (pip install {' '.join(missing)})"
        )


def _import_runtime(name: str):
    runtime = runtime_of(name)
    try:
        return importlib.import_module(runtime.module)
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"runtime {name!r} needs the Python package {runtime.requirement} "
            f"(pip install {runtime.requirement}): {exc}"
        ) from exc


# --------------------------------------------------------------------------- driver: conversion


def convert(model, runtime: str, image_size: int) -> PortableModel:
    """Convert the Keras feature extractor `model` ((N, s, s, 3) float input) for `runtime`.

    Needs TensorFlow (and the runtime's converter). Raises ConversionError with a one-line reason.
    """
    require(runtime, converting=True)
    if runtime == "tensorflow":
        return PortableModel(runtime, image_size, tuple(model.get_weights()))
    from fruits_spark.model import feature_function

    function = feature_function(model, image_size)
    try:
        payload = _to_onnx(function) if runtime == "onnx" else _to_openvino(function)
    except Exception as exc:  # noqa: BLE001 - every converter failure becomes one readable line
        raise ConversionError(
            f"cannot convert the Keras model for runtime {runtime!r}: {type(exc).__name__}: {reason(exc)}"
        ) from exc
    converted = PortableModel(runtime, image_size, payload)
    log.info("converted MobileNetV2 for %s: %.1f MB", runtime, converted.nbytes / 1e6)
    return converted


def reason(exc: BaseException) -> str:
    """The informative line of a (possibly multi-line) converter or runtime error message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:  # OpenVINO: "Check 'false' failed at <file>" ... "No conversion rule found for ..."
        if re.search(r"no conversion rule|not supported|unsupported|not registered", line, re.IGNORECASE):
            return line[:300]
    lines = [line for line in lines if not re.match(r"Check '.*' failed at ", line)] or lines
    return lines[0][:300] if lines else "(no message)"


def _to_onnx(function) -> tuple[bytes]:
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=ONNX_OPSET)
    # tf2onnx only logs the TensorFlow operations it cannot translate and leaves them in the graph,
    # where ONNX Runtime would refuse them on every executor: refuse them here, once.
    import onnx

    unknown = sorted({node.op_type for node in proto.graph.node if not onnx.defs.has(node.op_type, node.domain or "")})
    if unknown:
        raise ValueError(f"operation(s) not supported by ONNX: {', '.join(unknown)}")
    return (proto.SerializeToString(),)


def _to_openvino(function) -> tuple[bytes, bytes]:
    import openvino as ov

    converted = ov.convert_model(function)
    with tempfile.TemporaryDirectory(prefix="fruits-openvino-") as folder:
        xml = Path(folder) / "model.xml"
        ov.save_model(converted, str(xml), compress_to_fp16=False)  # float32 weights, as in Keras
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


# --------------------------------------------------------------------------- workers: inference

Predictor = Callable[[np.ndarray], np.ndarray]


def make_batch_predictor(model: PortableModel, threads: int) -> Predictor:
    """f(uint8 array (N, s, s, 3)) -> float32 array (N, 1280), running on `threads` cores."""
    if model.runtime == "onnx":
        return _onnx_predictor(model, threads)
    if model.runtime == "openvino":
        return _openvino_predictor(model, threads)
    if model.runtime == "tensorflow":
        from fruits_spark import model as keras_model

        return keras_model.make_batch_predictor(list(model.payload), model.image_size, threads)
    raise ValueError(f"unknown runtime {model.runtime!r}")


def _onnx_predictor(model: PortableModel, threads: int) -> Predictor:
    ort = _import_runtime("onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model.payload[0], options, providers=["CPUExecutionProvider"])
    [tensor] = session.get_inputs()

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {tensor.name: batch})[0]

    return predict


def openvino_compiled(model: PortableModel, threads: int):
    """The OpenVINO model compiled for the CPU in float32 on `threads` threads."""
    ov = _import_runtime("openvino")
    core = ov.Core()
    xml, weights = model.payload
    network = core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))
    return core.compile_model(
        network,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "f32",  # never bf16/f16 behind the user's back
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: the task's cores work on one batch
        },
    )


def _openvino_predictor(model: PortableModel, threads: int) -> Predictor:
    request = openvino_compiled(model, threads).create_infer_request()

    def predict(batch: np.ndarray) -> np.ndarray:
        return request.infer({0: batch})[0].copy()  # the output tensor is reused by the next call

    return predict


def prepare_worker(runtime: str, image_size: int) -> None:
    """Head start in a Python worker, before the model arrives: import the runtime (and, for
    the tensorflow runtime, build the graph) in a background thread of this process."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))  # Spark sets it to spark.task.cpus
    if runtime == "tensorflow":
        from fruits_spark.model import prebuild_in_background

        prebuild_in_background(image_size, threads)
        return
    import threading

    def work() -> None:
        try:
            _import_runtime(runtime)
        except Exception as exc:  # noqa: BLE001 - only a head start: the predictor reports it
            log.warning("importing runtime %s failed: %s", runtime, exc)

    threading.Thread(target=work, name="fruits-runtime-import", daemon=True).start()
