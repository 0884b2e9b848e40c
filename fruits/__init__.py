"""fruits-pipeline, the orchestration side: what the Airflow DAG runs around the Spark jobs.

    settings   deployment settings (FRUITS_*), the only module that reads them
    params     the trigger forms' Params of both DAGs, and their checks in code
    errors     PermanentError (no retry can fix it: the task fails at once) and the retry policy
    layout     where everything lives in the bucket
    storage    the one S3 access layer (`Bucket`: a hook bound to a bucket)
    contract   what the DAG hands the Spark jobs (their arguments) and what they leave (output names)
    core/      backend-independent tasks: planning, ledger, validation, report
    backends/  one subpackage per compute backend (local Spark, EMR), each with params() and build()

Nothing here imports TensorFlow or PySpark: the DAG file parses in well under a second.
"""
