"""EMR backend: one transient cluster per run, always terminated.

region    the region guard (EU member states unless the deployment allows more)
limits    the deployment's limits on instance types and node counts
budget    the timeouts that keep the teardown inside the run's timeout
code      spark_jobs/ uploaded to code/<version>/, the wheelhouse to wheelhouse/<key>/<arch>/
          (content-addressed, verified before reuse)
wheelhouse  the wheels the nodes install at boot, with no package index (make emr-wheelhouse)
cluster   the RunJobFlow request
steps     the featurize and PCA steps, and their timings
step_logs why a step failed, from its logs under the cluster's LogUri
sensors   the step sensor whose failure says why (step_logs)
iam       least-privilege policies (docs/emr.md)
tasks     the Airflow tasks: params(), build(), build_classifier() and reserved_seconds()
"""

from fruits.backends.emr.tasks import build, build_classifier, params, reserved_seconds

__all__ = ["build", "build_classifier", "params", "reserved_seconds"]
