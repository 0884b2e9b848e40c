"""EMR backend: one transient cluster per run, always terminated.

    region    the EU guard
    code      spark_jobs/ uploaded to code/<version>/ (content-addressed)
    cluster   the RunJobFlow request
    steps     the featurize and PCA steps, and their timings
    iam       least-privilege policies (docs/emr.md)
    tasks     the Airflow tasks: params() and build()
"""

from fruits.backends.emr.tasks import build, params

__all__ = ["build", "params"]
