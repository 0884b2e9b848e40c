"""Inference runtimes (fruits_spark.inference): every runtime gives the Keras model's features.

Parity is checked at the production input size (224 px) on a handful of images that include
every awkward kind the job accepts (grayscale, CMYK, RGBA, palette with transparency, 16-bit,
EXIF-rotated, non-square), decoded exactly as the job decodes them. The reference is the Keras
model called directly. Conversion and runtime failures must be one readable line.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from fruits_dev.samples import generate_samples
from fruits_spark import inference
from fruits_spark.images import decode_rgb
from fruits_spark.interface import FEATURE_DIM
from fruits_spark.model import load_model

SIZE = 224
TOLERANCE = 1e-4  # max |a - b| / max |b|, per image
AWKWARD_KINDS = ("_gray.jpg", "_cmyk.jpg", "_rgba.png", "_palette.png", "_16bit.png", "_exif6.jpg", "_wide.jpg")


def relative_errors(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.abs(got - expected).max(axis=1) / np.abs(expected).max(axis=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(image files, decoded pixels, the Keras model, its features) for 3 plain + 9 awkward images."""
    import keras

    root = tmp_path_factory.mktemp("parity")
    samples = generate_samples(root, n_classes=3, per_class=1, awkward=True, seed=7)
    files = sorted(samples.images)
    pixels = np.stack([decode_rgb(path.read_bytes(), SIZE)[0] for path in files])
    model = load_model("none", SIZE, seed=42)
    preprocess = keras.applications.mobilenet_v2.preprocess_input
    expected = np.asarray(model(preprocess(pixels.astype(np.float32)), training=False))
    return files, pixels, model, expected


def test_the_parity_images_include_every_awkward_kind(reference):
    files, pixels, _, expected = reference
    names = [path.name for path in files]
    for kind in AWKWARD_KINDS:
        assert any(name.endswith(kind) for name in names), (kind, names)
    assert pixels.shape == (len(files), SIZE, SIZE, 3) and pixels.dtype == np.uint8
    assert expected.shape == (len(files), FEATURE_DIM) and np.isfinite(expected).all()
    # Distinct images, distinct features: a runtime returning a constant would not pass below.
    assert relative_errors(expected[1:], expected[:-1]).min() > 1e-2


@pytest.fixture(scope="module")
def converted(reference):
    """runtime -> PortableModel, each converted once for the module."""
    _, _, model, _ = reference
    cache: dict[str, inference.PortableModel] = {}

    def get(runtime: str) -> inference.PortableModel:
        if runtime not in cache:
            cache[runtime] = inference.convert(model, runtime, SIZE)
        return cache[runtime]

    return get


@pytest.mark.parametrize("runtime", list(inference.RUNTIMES))
def test_every_runtime_gives_the_keras_features(reference, converted, runtime):
    files, pixels, _, expected = reference
    portable = converted(runtime)
    # What reaches the executors is this object through a broadcast, i.e. pickled.
    portable = pickle.loads(pickle.dumps(portable))
    assert (portable.runtime, portable.image_size) == (runtime, SIZE) and portable.nbytes > 8e6
    predict = inference.make_batch_predictor(portable, threads=2)
    # Batches of different sizes through the same predictor (the last batch of a partition is short).
    got = np.concatenate([predict(pixels[:5]), predict(pixels[5:])])
    assert got.shape == expected.shape and got.dtype == np.float32
    errors = relative_errors(got, expected)
    assert errors.max() <= TOLERANCE, dict(zip([p.name for p in files], errors.round(7)))


def test_openvino_is_compiled_in_float32(converted):
    """Left alone, OpenVINO infers in bf16 on CPUs with AVX512-BF16/AMX (relative error ~5e-2)."""
    import openvino as ov

    compiled = inference.openvino_compiled(converted("openvino"), threads=1)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_the_onnx_graph_takes_uint8_pixels_and_has_a_free_batch_dimension(converted):
    import onnx

    graph = onnx.load_model_from_string(converted("onnx").payload[0]).graph
    [tensor] = graph.input
    dims = tensor.type.tensor_type.shape.dim
    assert tensor.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert not dims[0].HasField("dim_value") and [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3]


@pytest.fixture(scope="module")
def unconvertible():
    """A Keras model calling back into Python (tf.numpy_function): no converter can translate it."""
    import keras
    import tensorflow as tf

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Lambda(
        lambda t: tf.numpy_function(np.sin, [t], tf.float32, stateful=False), output_shape=(3,)
    )(pooled)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_an_unsupported_operation_is_one_readable_line(unconvertible, runtime):
    with pytest.raises(inference.ConversionError) as failed:
        inference.convert(unconvertible, runtime, 32)
    message = str(failed.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(f"cannot convert the Keras model for runtime {runtime!r}: ")
    assert "PyFuncStateless" in message  # the operation that could not be converted is named


def test_a_runtime_that_is_not_installed_is_named_with_its_package(monkeypatch):
    real = inference.importlib.util.find_spec
    monkeypatch.setattr(
        inference.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("onnxruntime", "tf2onnx") else real(name, *a),
    )
    assert inference.missing_packages("onnx", converting=False) == ["onnxruntime==1.32.0"]
    with pytest.raises(inference.RuntimeUnavailable, match=r"pip install onnxruntime==1\.32\.0 tf2onnx==1\.17\.0"):
        inference.require("onnx", converting=True)
    inference.require("tensorflow", converting=True)  # the others are unaffected


def test_a_worker_without_the_runtime_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    portable = inference.PortableModel("onnx", 32, (b"",))
    with pytest.raises(
        inference.RuntimeUnavailable,
        match=r"runtime 'onnx' needs the Python package "
        r"onnxruntime==1\.32\.0 \(pip install",
    ):
        inference.make_batch_predictor(portable, threads=1)


def test_unknown_runtimes_are_refused():
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        inference.require("tensorrt")
