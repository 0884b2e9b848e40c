"""EMR backend: one transient cluster per run, always terminated.

    region    the EU guard
    code      spark_jobs/ uploaded to code/<version>/ (content-addressed)
    cluster   the RunJobFlow request
    steps     the featurize and PCA steps, and their timings
    iam       least-privilege policies (docs/emr.md)
    tasks     the Airflow tasks: params(), build() and build_classifier()
"""

from fruits.backends.emr.tasks import build, build_classifier, params

__all__ = ["build", "build_classifier", "params"]
