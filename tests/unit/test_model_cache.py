"""fruits_spark.model_cache: converted models kept between jobs, keyed by every conversion input."""

from __future__ import annotations

import numpy as np
import pytest

from fruits_spark import model_cache
from fruits_spark.inference import PortableModel


@pytest.mark.parametrize(
    "model",
    [
        PortableModel("onnx", 224, (b"\x08\x07onnx-graph",)),
        PortableModel("openvino", 96, (b"<net/>", b"\x00\x01weights")),
        PortableModel("tensorflow", 224, (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32))),
    ],
)
def test_an_entry_round_trips_exactly(tmp_path, model):
    name = model_cache.key(weights_identity="none/seed=42", image_size=model.image_size, runtime=model.runtime)
    model_cache.write_local(str(tmp_path), name, model_cache.dumps(model))
    loaded = model_cache.loads(model_cache.read_local(f"file://{tmp_path}", name), model.runtime, model.image_size)
    assert loaded.runtime == model.runtime and loaded.image_size == model.image_size
    for got, want in zip(loaded.payload, model.payload, strict=True):
        if isinstance(want, bytes):
            assert got == want
        else:
            assert got.dtype == want.dtype and np.array_equal(got, want)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_the_key_changes_with_every_input_of_the_conversion():
    base = dict(weights_identity="imagenet", image_size=224, runtime="onnx")
    keys = {
        model_cache.key(**base),
        model_cache.key(**{**base, "weights_identity": "none/seed=1"}),
        model_cache.key(**{**base, "image_size": 96}),
        model_cache.key(**{**base, "runtime": "openvino"}),
    }
    assert len(keys) == 4 and model_cache.key(**base) == model_cache.key(**base)


def test_weights_are_identified_by_seed_or_content(tmp_path):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"one")
    first = model_cache.weights_identity("s3://b/w.weights.h5", 1, str(weights))
    weights.write_bytes(b"two")
    assert model_cache.weights_identity("s3://b/w.weights.h5", 1, str(weights)) != first
    assert model_cache.weights_identity("none", 1) != model_cache.weights_identity("none", 2)


def test_a_damaged_or_foreign_entry_is_a_miss_never_trusted():
    assert model_cache.loads(b"not an npz", "onnx", 224) is None
    other = model_cache.dumps(PortableModel("openvino", 224, (b"x", b"y")))
    assert model_cache.loads(other, "onnx", 224) is None and model_cache.loads(other, "openvino", 96) is None
    assert model_cache.read_local("/nonexistent/folder", "x.npz") is None


def test_an_entry_name_needs_a_cache_folder_and_follows_the_weights(tmp_path):
    args = dict(weights="none", seed=42, image_size=224, runtime="onnx")
    assert model_cache.entry_name(None, **args) is None
    name = model_cache.entry_name(str(tmp_path), **args)
    assert name == model_cache.key(weights_identity="none/seed=42", image_size=224, runtime="onnx")
    assert model_cache.entry_name(str(tmp_path), **{**args, "seed": 7}) != name
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"one")
    with pytest.raises(ValueError):  # a weights file is identified by its content only
        model_cache.entry_name(str(tmp_path), **{**args, "weights": "s3://b/w.weights.h5"})
    assert (
        model_cache.entry_name(str(tmp_path), **{**args, "weights": "s3://b/w.weights.h5"}, weights_file=str(weights))
        != name
    )
