"""fruits_spark.model_loader: the featurize driver's model, from a local cache or a child process."""

from __future__ import annotations

import logging

import pytest

from fruits_spark import model_cache, model_loader
from fruits_spark.inference import PortableModel
from fruits_spark.runtime import JobError

MODEL = PortableModel("onnx", 32, (b"\x08\x07onnx-graph",))


def entry(folder) -> str:
    return model_cache.entry_name(str(folder), weights="none", seed=42, image_size=32, runtime="onnx")


def test_a_stored_model_is_read_back_and_a_miss_or_no_cache_is_none(tmp_path):
    assert model_loader.read_cached(None, str(tmp_path), entry(tmp_path), "onnx", 32) is None  # a miss
    model_loader.store(None, str(tmp_path), entry(tmp_path), MODEL)
    hit = model_loader.read_cached(None, f"file://{tmp_path}", entry(tmp_path), "onnx", 32)
    assert isinstance(hit, model_loader.CachedModel) and hit.result() == MODEL
    assert model_loader.read_cached(None, str(tmp_path), entry(tmp_path), "openvino", 32) is None  # not its runtime
    assert model_loader.read_cached(None, None, entry(tmp_path), "onnx", 32) is None
    model_loader.store(None, None, entry(tmp_path), MODEL)  # no cache: nothing written, nothing raised


def test_a_cache_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="fruits_spark.model_loader"):
        model_loader.store(None, str(blocked), entry(blocked), MODEL)
    assert "model cache: could not store" in caplog.text


def test_a_local_cache_hit_starts_no_child_and_stores_nothing_again(tmp_path):
    model_loader.store(None, str(tmp_path), entry(tmp_path), MODEL)
    driver = model_loader.DriverModel("none", 32, 42, "onnx", str(tmp_path))
    assert isinstance(driver.loader, model_loader.CachedModel)
    driver.check_remote_cache(None)  # local: nothing more to read
    assert driver.result(None) == MODEL
    assert [p.name for p in tmp_path.iterdir()] == [entry(tmp_path)]


def test_a_child_that_cannot_load_the_weights_ends_in_one_line(tmp_path):
    """The child builds the Keras model (TensorFlow: seconds), fails on the file and says why."""
    corrupt = tmp_path / "mobilenet.weights.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really HDF5" * 64)
    loader = model_loader.ModelLoader(str(corrupt), 32, 42, "onnx", name="s3://b/mobilenet.weights.h5")
    with pytest.raises(JobError, match=r"^cannot load the weights file s3://b/mobilenet.weights.h5: "):
        loader.result()
