"""Compute backends: where the two Spark jobs run. Each subpackage offers the same interface:

params(settings) -> dict[str, Param]         what it adds to the trigger forms
build(batch, settings) -> XComArg            the pipeline's featurize + PCA tasks, ending in a
                                             `fruits.contract.ComputeResult`
build_classifier(pca_run, settings)          the classifier DAG's classify.py tasks, the same way

local   Spark in local mode on files staged from S3 (one machine, docker-compose, demo)
emr     a transient EMR cluster per run, always terminated
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fruits.settings import COMPUTE_BACKENDS as NAMES


def load(name: str) -> ModuleType:
    """The backend package `name` (imported only when chosen: EMR pulls in the Amazon operators)."""
    if name not in NAMES:
        raise ValueError(f"unknown compute backend {name!r}; expected one of {NAMES}")
    return importlib.import_module(f"fruits.backends.{name}")
