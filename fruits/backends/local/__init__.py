"""Local backend: the run's jobs (`fruits.plan`) through spark-submit on the Spark connection,
Spark reading and writing the bucket through S3A (`operators`), wired as tasks in `tasks`."""

from fruits.backends.local.tasks import build, build_classifier, params

__all__ = ["build", "build_classifier", "params"]
