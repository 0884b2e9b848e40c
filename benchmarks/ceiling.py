"""The ceiling: one Python process decoding, resizing and running MobileNetV2 on all cores, no Spark.

    python benchmarks/ceiling.py --images DIR [--image-size 224] [--batch-size 64] [--seed 42]

Same decoding (`fruits_spark.images.decode_rgb`) and the same network and seeded weights as
`featurize.py --weights none`, run as a `tf.function` with a fixed input signature
([None, s, s, 3] uint8, preprocessing in the graph), TensorFlow's intra-op pool = all cores.
Prints one JSON line: phase timings measured inside the process (the benchmark also times the
whole process from outside, start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()

import numpy as np  # noqa: E402

# fruits_spark (decoding, network, seeded weights) from this checkout, whatever PYTHONPATH says.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spark_jobs"))


def list_images(root: str) -> list[str]:
    from fruits_spark.paths import is_image_path

    found = []
    for folder, _, names in os.walk(root):
        found.extend(os.path.join(folder, n) for n in names if is_image_path(n))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (default: all cores)")
    parser.add_argument("--save-features", help="write path -> features to this .npz (for checks)")
    args = parser.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from fruits_spark.images import ImageRejected, decode_rgb
    from fruits_spark.model import FEATURE_DIM, build_feature_extractor, seeded_weights

    imported = time.perf_counter()
    size = args.image_size
    model = build_feature_extractor(size)
    model.set_weights(seeded_weights(model.get_weights(), args.seed))
    preprocess = keras.applications.mobilenet_v2.preprocess_input

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def features(batch):
        return model(preprocess(tf.cast(batch, tf.float32)), training=False)

    features.get_concrete_function()  # trace now, not inside the timed loop
    built = time.perf_counter()

    files = list_images(args.images)
    listed = time.perf_counter()
    decode_s = model_s = 0.0
    kept, rejected, outputs = [], 0, []
    for start in range(0, len(files), args.batch_size):
        t0 = time.perf_counter()
        pixels = []
        for path in files[start:start + args.batch_size]:
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                pixels.append(decode_rgb(data, size)[0])
                kept.append(path)
            except ImageRejected:
                rejected += 1
        t1 = time.perf_counter()
        if pixels:
            outputs.append(features(tf.constant(np.stack(pixels))).numpy())
        t2 = time.perf_counter()
        decode_s += t1 - t0
        model_s += t2 - t1
    finished = time.perf_counter()
    matrix = np.concatenate(outputs) if outputs else np.zeros((0, FEATURE_DIM), np.float32)
    if args.save_features:
        np.savez(args.save_features, paths=np.array(kept), features=matrix)
    loop = finished - listed
    print(json.dumps({
        "images": len(kept),
        "rejected": rejected,
        "threads": threads,
        "batch_size": args.batch_size,
        "image_size": size,
        "import_s": round(imported - STARTED, 3),
        "build_and_trace_s": round(built - imported, 3),
        "loop_s": round(loop, 3),
        "decode_s": round(decode_s, 3),
        "model_s": round(model_s, 3),
        "loop_images_per_s": round(len(kept) / loop, 3) if loop > 0 else None,
        "process_s": round(finished - STARTED, 3),
        "features_finite": bool(np.isfinite(matrix).all()),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
