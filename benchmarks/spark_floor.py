"""What Spark costs pca.py's data path before any computing: the floor under the PCA comparison.

    spark-submit benchmarks/spark_floor.py --features DIR --output DIR

Does what spark_jobs/pca.py must do with its input and nothing else: start a session like the
job's, read the features parquet, stream it into Python workers once (pca.py's covariance
pass; here each worker only counts rows), stream it into Python workers again and write
(path, label) as parquet (pca.py's projection pass, without the projection). Same Arrow batch
size and Parquet settings as the job. No covariance, no eigendecomposition, no model, no plots.

The difference between pca.py's time and this one is what the job's own code costs; this time
alone, divided by the numpy reference's, is the best ratio a PCA job could reach on the machine
while it reads its input through Spark into Python workers twice (to compute the covariance,
then to project). Prints one JSON line: rows and the seconds of each phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

STARTED = time.perf_counter()

from fruits_spark.pca_model import SESSION_DEFAULTS, projected_writer  # noqa: E402
from fruits_spark.runtime import create_session, unless_submitted  # noqa: E402


def count_rows(batches):
    """mapInArrow function: one row per partition, its row count (the batches are read, not used)."""
    import pyarrow as pa

    rows = 0
    for batch in batches:
        rows += batch.num_rows
    yield pa.RecordBatch.from_pydict({"rows": [rows]}, schema=pa.schema([("rows", pa.int64())]))


def keep_keys(batches):
    """mapInArrow function: (path, label, features) -> (path, label)."""
    import pyarrow as pa

    for batch in batches:
        yield pa.RecordBatch.from_arrays([batch.column("path"), batch.column("label")], names=["path", "label"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    spark = create_session("fruits-spark-floor", unless_submitted(SESSION_DEFAULTS))
    t1 = time.perf_counter()
    frame = spark.read.parquet(args.features).select("path", "label", "features")
    rows = sum(r.rows for r in frame.select("label", "features").mapInArrow(count_rows, "rows long").collect())
    t2 = time.perf_counter()
    projected_writer(frame.mapInArrow(keep_keys, "path string, label string")).parquet(args.output)  # as the job writes
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "rows": rows,
                "import_seconds": round(t0 - STARTED, 3),
                "session_seconds": round(t1 - t0, 3),
                "first_pass_seconds": round(t2 - t1, 3),
                "second_pass_seconds": round(t3 - t2, 3),
                "seconds": round(t3 - STARTED, 3),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
