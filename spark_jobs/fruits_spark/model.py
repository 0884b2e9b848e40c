"""MobileNetV2 as a 1280-float feature extractor: the Keras side.

Keras is the source of the network and of its weights. The driver builds the model once
(`load_model`) and hands it to `fruits_spark.inference`, which either takes its weights (the
`tensorflow` runtime) or converts it for another runtime. With the `tensorflow` runtime every
Python worker builds the network once (`make_batch_predictor`, possibly started ahead of the
weights by `prebuild_in_background`), loads the broadcast weights into it and reuses it for all
of its batches. TensorFlow is imported lazily so that importing this module is cheap, and
workers of the other runtimes never import it.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future

import numpy as np

MIN_IMAGE_SIZE = 32  # smallest input Keras' MobileNetV2 accepts

log = logging.getLogger(__name__)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_feature_extractor(image_size: int, weights: str | None = None):
    """MobileNetV2 without its classifier, global-average-pooled: (N, s, s, 3) -> (N, 1280).

    Without pooling="avg" the headless network returns 7x7x1280 = 62,720 values per image.
    """
    _quiet_tensorflow()
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        include_top=False,
        pooling="avg",
        weights=weights,
    )


class WeightsError(Exception):
    """The weights could not be obtained (a missing, corrupt or mismatching weights file)."""


def load_model(spec: str, image_size: int, seed: int, name: str | None = None):
    """The Keras feature extractor with its weights, built once on the driver.

    spec: "imagenet" (Keras download, the default for users), "none" (random init with a
    fixed seed, for offline tests and benchmarks) or the local path of a Keras weights file
    (the job copies a file from any storage first; `name`, its URI, is what errors show).
    """
    model = build_feature_extractor(image_size, weights="imagenet" if spec == "imagenet" else None)
    if spec == "none":
        model.set_weights(seeded_weights(model.get_weights(), seed))
    elif spec != "imagenet":
        try:
            model.load_weights(spec)
        except Exception as exc:  # noqa: BLE001 - h5py, Keras and OS errors alike: one message
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsError(f"cannot load the weights file {name or spec}: {detail}") from exc
    weights = model.weights
    log.info(
        "weights %s: %d arrays, %.1f MB",
        name or spec,
        len(weights),
        sum(int(np.prod(w.shape)) * 4 for w in weights) / 1e6,
    )
    return model


def load_weights(spec: str, image_size: int, seed: int) -> list[np.ndarray]:
    """The weights of `load_model(spec, ...)` as a list of arrays (what the tensorflow runtime ships)."""
    return load_model(spec, image_size, seed).get_weights()


def feature_function(model, image_size: int):
    """(N, s, s, 3) uint8 -> (N, 1280) float32 as a tf.function with a fixed input signature.

    MobileNetV2's `preprocess_input` (x / 127.5 - 1) runs inside the function, so the graph a
    runtime receives takes the decoded pixels as they are. The batch dimension is free.
    """
    _quiet_tensorflow()
    import keras
    import tensorflow as tf

    preprocess = keras.applications.mobilenet_v2.preprocess_input

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="pixels")])
    def features(batch):
        return model(preprocess(tf.cast(batch, tf.float32)), training=False)

    return features


def seeded_weights(template: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Deterministic random weights shaped like `template`, for runs without ImageNet weights.

    Convolution kernels are drawn He-normal (std = sqrt(2 / fan_in)) and batch norms are left
    at identity, so activations keep an O(1) scale through the 50-odd layers: Keras' default
    initialisation shrinks them to ~1e-12 and would make the features numerically useless.
    """
    rng = np.random.default_rng(seed)
    weights = []
    for array in template:
        if array.ndim == 4:  # conv (kh, kw, in, out) or depthwise (kh, kw, channels, 1)
            kh, kw, channels, out = array.shape
            fan_in = kh * kw * (1 if out == 1 and channels > 1 else channels)
            array = rng.normal(0.0, np.sqrt(2.0 / fan_in), array.shape)
        weights.append(np.asarray(array, dtype=np.float32))
    return weights


def configure_threads(threads: int) -> None:
    """Match TensorFlow's thread pools to the cores Spark gave this task (no oversubscription)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # runtime already initialised in this process: keep its setting
        pass


def _build_graph(image_size: int, threads: int):
    """(model, features): the network with placeholder weights and its traced, optimised graph.

    Everything here is independent of the weights, so a worker can do it before they arrive.
    A tf.function with a fixed input signature (batch dimension free) is traced once and then
    runs as a graph; Keras' `predict` would rebuild its machinery on every call, and eager
    calls run op by op. MobileNetV2's `preprocess_input` runs inside the graph. The graph reads
    the model's variables, so `model.set_weights` later changes what it computes, not the graph.
    """
    _quiet_tensorflow()
    configure_threads(threads)
    import tensorflow as tf

    model = build_feature_extractor(image_size, weights=None)
    features = feature_function(model, image_size)
    # The first call optimises the graph (grappler) once for every batch size: do it now.
    features(tf.zeros([1, image_size, image_size, 3], tf.uint8))
    return model, features


# Graphs being built ahead of the weights in this process (`prebuild_in_background`), taken
# (at most once each) by `make_batch_predictor`.
_prebuilt: dict[tuple[int, int], Future] = {}
_prebuilt_lock = threading.Lock()


def prebuild_in_background(image_size: int, threads: int) -> bool:
    """Start importing TensorFlow and building the graph in a daemon thread of this process.

    The featurize job calls this in its Python workers while the driver is still loading the
    weights; the worker's main thread stays free for Spark. Returns False if already started.
    """
    key = (image_size, threads)
    with _prebuilt_lock:
        if key in _prebuilt:
            return False
        future: Future = Future()
        _prebuilt[key] = future

    def work() -> None:
        try:
            future.set_result(_build_graph(image_size, threads))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who rebuilds
            future.set_exception(exc)

    threading.Thread(target=work, name="fruits-prebuild", daemon=True).start()
    return True


def _take_prebuilt(image_size: int, threads: int):
    with _prebuilt_lock:
        future = _prebuilt.pop((image_size, threads), None)
    if future is None:
        return None
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - a failed head start only costs the time to rebuild
        log.warning("prebuilt MobileNetV2 unusable (%s): building it again", exc)
        return None


def make_batch_predictor(weights: list[np.ndarray], image_size: int, threads: int):
    """Return f(uint8 array (N, s, s, 3)) -> float32 array (N, 1280).

    Uses the graph started by `prebuild_in_background` in this process if there is one (waiting
    for it to finish), otherwise builds it; then loads `weights` into its variables.
    """
    built = _take_prebuilt(image_size, threads) or _build_graph(image_size, threads)
    model, features = built
    model.set_weights(weights)
    import tensorflow as tf

    def predict(batch: np.ndarray) -> np.ndarray:
        return features(tf.constant(batch)).numpy()

    return predict
