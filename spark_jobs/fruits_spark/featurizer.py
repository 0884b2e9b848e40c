"""Image bytes -> MobileNetV2 features on the executors, written in one pass.

`featurize_udf` is a `predict_batch_udf` over the broadcast `PortableModel`: each Python worker
builds its predictor once (predict_batch_udf caches the function) and decodes per model batch,
so memory holds one batch of pixels at a time. An image that fails to decode gives an error
string, not a crash; `write_features` gathers those as metrics of the features write itself,
so the features stream to parquet with nothing cached and no image featurized twice.
"""

from __future__ import annotations

import json

from fruits_spark.interface import FEATURE_DIM

# The features parquet, as the job writes it (also when no image is readable).
FEATURES_SCHEMA = [
    ("path", "string"),
    ("label", "string"),
    ("features", "array<float>"),
    ("width", "int"),
    ("height", "int"),
    ("size_bytes", "bigint"),
    ("sha256", "string"),
]


def featurize_udf(bc_model, batch_size: int, max_pixels: int):
    """predict_batch_udf: content bytes -> struct(features, error, width, height).

    `bc_model` is the broadcast `PortableModel`. Decoding happens per model batch inside the
    worker, so memory holds one batch of pixels at a time whatever the partition size. A failed
    decode gives an error string, not a crash.
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

    def make_predict_fn():
        import os
        import sys
        import time

        import numpy as np

        from fruits_spark.images import ImageRejected, decode_rgb
        from fruits_spark.inference import make_batch_predictor

        threads = int(os.environ.get("OMP_NUM_THREADS", "1"))  # Spark sets it to spark.task.cpus
        built = time.perf_counter()
        model = bc_model.value
        predictor = make_batch_predictor(model, threads)
        # Once per Python worker: predict_batch_udf caches this function for later tasks.
        print(
            f"featurize worker pid={os.getpid()}: built MobileNetV2 for {model.runtime} ({model.image_size}px, "
            f"{threads} thread(s)) in {time.perf_counter() - built:.1f}s; TensorFlow loaded: "
            f"{'yes' if 'tensorflow' in sys.modules else 'no'}",
            file=sys.stderr,
            flush=True,
        )

        def predict(contents: np.ndarray) -> dict:
            n, size = len(contents), model.image_size
            pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
            decoded = np.zeros(n, dtype=bool)
            errors = np.empty(n, dtype=object)
            widths = np.zeros(n, dtype=np.int32)
            heights = np.zeros(n, dtype=np.int32)
            for i, data in enumerate(contents):
                try:
                    pixels[i], widths[i], heights[i] = decode_rgb(data, size, max_pixels)
                    decoded[i] = True
                except ImageRejected as exc:
                    errors[i] = str(exc)
            features = np.zeros((len(contents), FEATURE_DIM), dtype=np.float32)
            if decoded.any():
                features[decoded] = predictor(pixels[decoded] if not decoded.all() else pixels)
            return {"features": features, "error": errors, "width": widths, "height": heights}

        return predict

    return_type = StructType(
        [
            StructField("features", ArrayType(FloatType())),
            StructField("error", StringType()),
            StructField("width", IntegerType()),
            StructField("height", IntegerType()),
        ]
    )
    return predict_batch_udf(make_predict_fn, return_type=return_type, batch_size=batch_size)


def write_features(images, udf, output: str) -> tuple[int, list[tuple]]:
    """Featurize `images` (binaryFile rows with their `source` and `label`) with `udf` and write
    the decoded ones to the `output` parquet; return (rows seen, reject rows (path, label, reason,
    size_bytes) of the images that failed to decode).

    The failures, and the count of rows, are gathered as metrics of the write (a few short rows).
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    featurized = images.select(
        F.col("source").alias("path"),
        "label",
        F.col("length").alias("size_bytes"),
        F.sha2("content", 256).alias("sha256"),
        udf("content").alias("out"),
    ).select("path", "label", "size_bytes", "sha256", "out.*")
    failed = Observation("featurize_rejects")
    reject = F.struct("path", "label", F.col("error").alias("reason"), "size_bytes")
    # The rejects travel as one JSON string: Spark 3.5's Observation hands nested values (a list of
    # structs) to Python as raw Java objects, Spark 4 as rows; a string is a string on both.
    featurized.observe(
        failed,
        F.count(F.lit(1)).alias("rows"),
        F.to_json(F.collect_list(F.when(F.col("error").isNotNull(), reject))).alias("rejects"),
    ).where(F.col("error").isNull()).select(*[name for name, _ in FEATURES_SCHEMA]).write.mode("overwrite").parquet(
        output
    )
    metrics = failed.get
    undecodable = [
        (r["path"], r.get("label"), r["reason"], r.get("size_bytes")) for r in json.loads(metrics["rejects"])
    ]
    return metrics["rows"], undecodable
