"""Reference PCA in one process with numpy: read the features parquet, centre, covariance
(one BLAS level-3 product), eigh, project onto k components, write parquet.

    python benchmarks/numpy_pca.py --features DIR --k 50 --output DIR

Same quantities as spark_jobs/pca.py (centred PCA; explained variance = eigenvalue / sum of
all eigenvalues). Prints one JSON line with its phase timings and the explained variance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", required=True)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    table = pq.read_table(args.features, columns=["path", "label", "features"])
    column = table.column("features")
    rows = len(column)
    dim = len(column[0]) if rows else 0
    matrix = np.empty((rows, dim), dtype=np.float64)
    row = 0
    for chunk in column.chunks:  # float32 lists -> one float64 matrix, chunk by chunk
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        matrix[row : row + len(chunk)] = values.reshape(len(chunk), dim)
        row += len(chunk)
    t1 = time.perf_counter()

    mean = matrix.mean(axis=0)
    matrix -= mean
    covariance = (matrix.T @ matrix) / (rows - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    components = eigenvectors[:, : args.k]
    explained = eigenvalues / eigenvalues.sum()
    t2 = time.perf_counter()

    projected = matrix @ components
    out = pa.table(
        {
            "path": table.column("path"),
            "label": table.column("label"),
            "pca_features": pa.FixedSizeListArray.from_arrays(pa.array(projected.ravel()), args.k).cast(
                pa.list_(pa.float64())
            ),
        }
    )
    import os

    os.makedirs(args.output, exist_ok=True)
    pq.write_table(out, os.path.join(args.output, "part-00000.parquet"))
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "rows": rows,
                "dim": matrix.shape[1],
                "k": args.k,
                "import_seconds": round(t0 - STARTED, 3),
                "read_seconds": round(t1 - t0, 3),
                "fit_seconds": round(t2 - t1, 3),
                "project_write_seconds": round(t3 - t2, 3),
                "seconds": round(t3 - STARTED, 3),
                "explained_variance": [float(x) for x in explained[: args.k]],
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
