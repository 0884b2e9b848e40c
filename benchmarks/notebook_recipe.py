"""The common notebook recipe for this task, re-implemented as the benchmark's baseline.

    spark-submit benchmarks/notebook_recipe.py --images DIR --output URI [--image-size 224] [--seed 42]

As in the Databricks "featurization for transfer learning" notebook: the driver builds the
model and broadcasts its weights; `binaryFile` -> `repartition(24)` -> a scalar-iterator pandas
UDF that rebuilds the network from the broadcast weights in every task and calls
`model.predict` on each Arrow batch (`maxRecordsPerBatch` 1024) -> parquet (path, features).
Differences from the notebook, so that both sides do the same work: MobileNetV2 with
`pooling="avg"` (1280 floats per image, like featurize.py) instead of ResNet50's flattened
maps, the same seeded weights as `featurize.py --weights none`, and `predict(verbose=0)`.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--partitions", type=int, default=24)
    args = parser.parse_args(argv)
    size = args.image_size
    started = time.perf_counter()

    from pyspark.sql import SparkSession
    from pyspark.sql.functions import col, pandas_udf

    spark = SparkSession.builder.appName("notebook-recipe").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1024")

    from tensorflow.keras.applications import MobileNetV2

    from fruits_spark.model import seeded_weights

    model = MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
    bc_model_weights = spark.sparkContext.broadcast(seeded_weights(model.get_weights(), args.seed))

    def model_fn():
        """Returns a MobileNetV2 model with top layer removed and broadcasted pretrained weights."""
        from tensorflow.keras.applications import MobileNetV2

        model = MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
        model.set_weights(bc_model_weights.value)
        return model

    def preprocess(content):
        """Preprocesses raw image bytes for prediction."""
        from PIL import Image
        from tensorflow.keras.applications.mobilenet_v2 import preprocess_input
        from tensorflow.keras.preprocessing.image import img_to_array

        img = Image.open(io.BytesIO(content)).resize([size, size])
        arr = img_to_array(img)
        return preprocess_input(arr)

    def featurize_series(model, content_series):
        """Featurize a pd.Series of raw images using the input model."""
        input = np.stack(content_series.map(preprocess))
        preds = model.predict(input, verbose=0)
        output = [p.flatten() for p in preds]
        return pd.Series(output)

    @pandas_udf("array<float>")
    def featurize_udf(content_series_iter: Iterator[pd.Series]) -> Iterator[pd.Series]:
        model = model_fn()
        for content_series in content_series_iter:
            yield featurize_series(model, content_series)

    images = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(args.images)
    )
    features_df = images.repartition(args.partitions).select(col("path"), featurize_udf("content").alias("features"))
    features_df.write.mode("overwrite").parquet(args.output)
    rows = spark.read.parquet(args.output).count()
    seconds = time.perf_counter() - started
    print(f"notebook_recipe: images={rows} seconds={seconds:.2f} images_per_s={rows / seconds:.2f}", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
