"""The ceiling: one Python process decoding, resizing and running MobileNetV2 on all cores, no Spark.

    python benchmarks/ceiling.py --images DIR [--runtime tensorflow|onnx|openvino] [--image-size 224]
                                 [--batch-size 64] [--seed 42] [--threads N]

Same decoding (`fruits_spark.images.decode_rgb`) and the same network and seeded weights as
`featurize.py --weights none`. `--runtime tensorflow` (the default) runs the Keras model as a
`tf.function` with a fixed input signature ([None, s, s, 3] uint8, preprocessing in the graph);
the other runtimes run the model converted exactly as the job converts it
(`fruits_spark.inference`), converted in this process. Threads = all cores.
Prints one JSON line: phase timings measured inside the process (the benchmark also times the
whole process from outside, start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402


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
    parser.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    parser.add_argument(
        "--runtime",
        choices=["tensorflow", "onnx", "openvino"],
        default="tensorflow",
        help="inference runtime (default tensorflow)",
    )
    parser.add_argument("--save-features", help="write path -> features to this .npz (for checks)")
    args = parser.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from fruits_spark import inference
    from fruits_spark.images import ImageRejected, decode_rgb
    from fruits_spark.interface import FEATURE_DIM
    from fruits_spark.model import configure_threads, load_model

    configure_threads(threads)  # imports TensorFlow: every runtime converts from the Keras model
    imported = time.perf_counter()
    size = args.image_size
    converted = inference.convert(load_model("none", size, args.seed), args.runtime, size)
    predict = inference.make_batch_predictor(converted, threads)
    predict(np.zeros((1, size, size, 3), np.uint8))  # trace / plan now, not inside the timed loop
    built = time.perf_counter()

    files = list_images(args.images)
    listed = time.perf_counter()
    decode_s = model_s = 0.0
    kept, rejected, outputs = [], 0, []
    for start in range(0, len(files), args.batch_size):
        t0 = time.perf_counter()
        pixels = []
        for path in files[start : start + args.batch_size]:
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                pixels.append(decode_rgb(data, size)[0])
                kept.append(path)
            except ImageRejected:
                rejected += 1
        t1 = time.perf_counter()
        if pixels:
            outputs.append(predict(np.stack(pixels)))
        t2 = time.perf_counter()
        decode_s += t1 - t0
        model_s += t2 - t1
    finished = time.perf_counter()
    matrix = np.concatenate(outputs) if outputs else np.zeros((0, FEATURE_DIM), np.float32)
    if args.save_features:
        np.savez(args.save_features, paths=np.array(kept), features=matrix)
    loop = finished - listed
    print(
        json.dumps(
            {
                "runtime": args.runtime,
                "images": len(kept),
                "rejected": rejected,
                "threads": threads,
                "batch_size": args.batch_size,
                "image_size": size,
                "import_s": round(imported - STARTED, 3),
                "build_s": round(built - imported, 3),  # model, weights, conversion, first call
                "loop_s": round(loop, 3),
                "decode_s": round(decode_s, 3),
                "model_s": round(model_s, 3),
                "loop_images_per_s": round(len(kept) / loop, 3) if loop > 0 else None,
                "process_s": round(finished - STARTED, 3),
                "features_finite": bool(np.isfinite(matrix).all()),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
