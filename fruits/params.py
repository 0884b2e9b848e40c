"""The trigger form: the Params every run takes, with defaults from the deployment settings.

The compute backend adds its own (`fruits.backends.<name>.params`); `for_dag` joins both.
"""

from __future__ import annotations

from types import ModuleType

from airflow.sdk import Param

from fruits.settings import Settings


def pipeline_params(settings: Settings) -> dict[str, Param]:
    return {
        "bucket": Param(settings.bucket, type="string", minLength=3, maxLength=63,
                        description="S3 bucket holding the landing prefix and every output."),
        "landing_prefix": Param(settings.landing_prefix, type="string",
                                description="Prefix where new images land, e.g. `landing/`."),
        "weights": Param(settings.weights, type="string", minLength=1,
                         description="`imagenet` (Keras download), `none` (seeded random, offline) "
                                     "or the URI of a Keras `.weights.h5` file."),
        "image_size": Param(settings.image_size, type="integer", minimum=32, maximum=1024,
                            description="Model input size in pixels (224 for ImageNet weights)."),
        "pca_k": Param(None, type=["null", "integer"], minimum=1,
                       description="Fixed number of PCA components; leave empty to use pca_variance."),
        "pca_variance": Param(settings.pca_variance, type="number", exclusiveMinimum=0, maximum=1,
                              description="Smallest k reaching this cumulative explained variance."),
        "sensor_timeout": Param(settings.sensor_timeout, type="integer", minimum=0, maximum=86400,
                                description="Seconds to wait for new images before the run is skipped."),
    }


def for_dag(settings: Settings, backend: ModuleType) -> dict[str, Param]:
    return {**pipeline_params(settings), **backend.params(settings)}
