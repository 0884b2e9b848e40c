"""The converted model the featurize driver broadcasts: from `--model-cache`, or built beside Spark.

Start-up work runs side by side: a model that is not in a local cache is built and converted
in a child process (TensorFlow never enters the driver itself) from before Spark starts; a hit
in a remote cache, read once Spark is up, stops that child. A weights file is copied to the
driver from any storage first (Spark reads it), then loaded the same way. A model built here is
stored in the cache for the next jobs (`fruits_spark.model_cache`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import traceback
from dataclasses import dataclass

from fruits_spark import hadoop_fs, inference, model_cache
from fruits_spark.runtime import JobError

log = logging.getLogger(__name__)

NAMED_WEIGHTS = ("imagenet", "none")  # built by Keras itself; anything else is a weights file's URI


def _load_model_child(conn, spec: str, image_size: int, seed: int, runtime: str, name: str) -> None:
    try:
        from fruits_spark import inference
        from fruits_spark.model import WeightsError, load_model

        try:
            conn.send(("ok", inference.convert(load_model(spec, image_size, seed, name), runtime, image_size), ""))
        except (WeightsError, inference.ConversionError, inference.RuntimeUnavailable) as exc:
            conn.send(("error", str(exc), ""))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        message = next((line.strip() for line in str(exc).splitlines() if line.strip()), "(no message)")
        conn.send(("error", f"loading the model failed: {type(exc).__name__}: {message[:300]}", traceback.format_exc()))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # nothing to clean up: skip TensorFlow's slow interpreter teardown


class ModelLoader:
    """The Keras model built and converted for the runtime in a child process, so that the driver
    goes on with Spark meanwhile.

    TensorFlow's import, the model build and the conversion take several seconds of one core;
    in a child they overlap with the listing and with the workers' own start-up, and the
    driver's memory stays free of TensorFlow. A daemon child: it is stopped if the driver exits
    early. `result()` gives the `PortableModel` to broadcast, or raises a one-line JobError.
    """

    def __init__(self, spec: str, image_size: int, seed: int, runtime: str, name: str | None = None):
        self.spec = spec
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_load_model_child,
            name="fruits-model",
            daemon=True,
            args=(child_conn, spec, image_size, seed, runtime, name or spec),
        )
        self._process.start()
        child_conn.close()

    def stop(self) -> None:
        """Not needed any more (the model came from the cache): stop converting."""
        self._process.terminate()
        self._process.join(timeout=10)
        self._conn.close()

    def result(self):
        try:
            status, payload, detail = self._conn.recv()
        except EOFError:
            status, payload, detail = "error", f"the model loader exited with code {self._process.exitcode}", ""
        finally:
            self._conn.close()
            self._process.join(timeout=10)
        if status != "ok":
            if detail:
                log.info("model loader traceback:\n%s", detail)
            raise JobError(payload)
        return payload


@dataclass
class CachedModel:
    """A converted model found in `--model-cache` (same interface as ModelLoader)."""

    model: object

    def result(self):
        return self.model

    def stop(self) -> None:
        pass


def _cache_read(spark, folder: str, name: str) -> bytes | None:
    if model_cache.is_local(folder):
        return model_cache.read_local(folder, name)
    uri = model_cache.join(folder, name)
    return hadoop_fs.read_bytes(spark, uri) if hadoop_fs.exists(spark, uri) else None


def read_cached(spark, folder: str | None, name: str | None, runtime: str, image_size: int) -> CachedModel | None:
    """The converted model from the cache `folder`, or None (no cache, a miss, or an unusable entry).
    `spark` is only needed for a remote folder."""
    if not folder or name is None:
        return None
    model = model_cache.loads(data, runtime, image_size) if (data := _cache_read(spark, folder, name)) else None
    log.info("model cache %s: %s", "hit" if model else "miss", model_cache.join(folder, name))
    return CachedModel(model) if model else None


def store(spark, folder: str | None, name: str | None, model: inference.PortableModel) -> None:
    """Keep a freshly converted model for the next jobs; a cache that cannot be written only costs
    the next job a conversion, so it is a warning, not a failure."""
    if not folder or name is None:
        return
    data = model_cache.dumps(model)
    try:
        if model_cache.is_local(folder):
            model_cache.write_local(folder, name, data)
        else:
            hadoop_fs.write_bytes(spark, model_cache.join(folder, name), data)
        log.info("model cache: stored %s (%s)", model_cache.join(folder, name), model_cache.describe(model))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("model cache: could not store %s: %s", name, exc)


class DriverModel:
    """The model for the job's arguments, from the fastest source; create it before Spark starts.

    weights: "imagenet", "none" or the URI of a Keras weights file; cache: the `--model-cache`
    folder or None.
    """

    def __init__(self, weights: str, image_size: int, seed: int, runtime: str, cache: str | None):
        self.weights, self.image_size, self.seed, self.runtime, self.cache = weights, image_size, seed, runtime, cache
        named = weights in NAMED_WEIGHTS
        self.name = self._entry_name() if named else None
        self.loader = self._cached(None) if self.name and model_cache.is_local(cache) else None
        if self.loader is None and named:
            log.info(
                "starting Spark; building MobileNetV2 (weights %r) for runtime %s in a child process meanwhile",
                weights,
                runtime,
            )
            self.loader = ModelLoader(weights, image_size, seed, runtime)

    def _entry_name(self, weights_file: str | None = None) -> str | None:
        return model_cache.entry_name(
            self.cache,
            weights=self.weights,
            seed=self.seed,
            image_size=self.image_size,
            runtime=self.runtime,
            weights_file=weights_file,
        )

    def _cached(self, spark) -> CachedModel | None:
        return read_cached(spark, self.cache, self.name, self.runtime, self.image_size)

    def check_remote_cache(self, spark) -> None:
        """Once Spark is up: a remote cache is read through Spark's file systems; a hit stops the child."""
        if isinstance(self.loader, ModelLoader) and self.name and not model_cache.is_local(self.cache):
            hit = self._cached(spark)
            if hit:
                self.loader.stop()
                self.loader = hit

    def result(self, spark) -> inference.PortableModel:
        """The converted model; a failed load or conversion raises a one-line JobError."""
        if self.loader is None:  # a weights file: copy it from any storage, then load it beside Spark
            local_weights = hadoop_fs.copy_to_local(spark, self.weights)
            self.name = self._entry_name(local_weights)
            self.loader = self._cached(spark) or ModelLoader(
                local_weights, self.image_size, self.seed, self.runtime, name=self.weights
            )
        model = self.loader.result()
        if isinstance(self.loader, ModelLoader):
            store(spark, self.cache, self.name, model)
        return model
