"""Local backend: spark-submit in local mode on files staged from S3 (`staging`), wired as tasks
in `tasks`."""

from fruits.backends.local.tasks import build, build_classifier, params

__all__ = ["build", "build_classifier", "params"]
