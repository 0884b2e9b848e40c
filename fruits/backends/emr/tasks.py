"""Tasks of the EMR backend (FRUITS_COMPUTE=emr): one transient EMR cluster per run, always terminated.

    check_region -> upload_code -> list_pca_inputs -> cluster_spec -> create_cluster
        -> add_featurize_step -> wait_featurize -> add_pca_step -> wait_pca -> emr_outputs
    terminate_cluster: teardown of create_cluster, after wait_pca whatever its outcome

`build(batch, settings)` adds them to the DAG being defined and returns the XComArg of
`emr_outputs`: a `ComputeResult` (as a dict), the same record as the local backend's, so
validation, commit and report do not change. `build_classifier(pca_run, settings)` gives the
classifier DAG a cluster of its own, with the same guards and one step:

    check_region -> upload_code -> classifier_spec -> create_cluster -> add_classify_step
        -> wait_classify -> emr_outputs;  terminate_cluster as above

Three independent guards keep a cluster from outliving its run:
  1. `terminate_cluster` is a teardown task: it runs when the steps succeeded, failed or timed
     out, and when a run is marked failed by hand (a failed step still fails the run);
  2. `create_cluster` waits for the cluster to be ready with `terminate_job_flow_on_failure`:
     a cluster that fails to start (bootstrap, capacity, timeout) is terminated right there;
  3. the cluster's own `AutoTerminationPolicy` ends it after `idle_timeout` seconds without
     work, even if Airflow itself is gone.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.sdk import Param, task, task_group

from fruits import contract, layout
from fruits.backends.emr import cluster, region, steps
from fruits.settings import Settings

log = logging.getLogger(__name__)

# The longest a cluster may need to terminate before the teardown task reports a problem.
TERMINATE_TIMEOUT = 30 * 60
# Idle time that may separate the two steps (sensor poll + scheduling): a shorter idle timeout
# could let EMR end the cluster between featurize and PCA.
MIN_RUN_IDLE_TIMEOUT = 600


def params(settings: Settings) -> dict[str, Param]:
    """EMR params of the trigger form; defaults from the FRUITS_EMR_* settings."""
    return {
        "region": Param(settings.emr_region, type="string", pattern=region.REGION_PATTERN,
                        examples=list(region.EU_REGIONS),
                        description="AWS region of the EMR cluster. Must be in the EU (eu-*) unless "
                                    "allow_non_eu_region is set; ideally the bucket's region."),
        "allow_non_eu_region": Param(settings.emr_allow_non_eu_region, type="boolean",
                                     description="Explicit override: allow a cluster (and a bucket) outside "
                                                 "the EU. Only with approval: the data then leaves the EU."),
        "release_label": Param(settings.emr_release_label, type="string",
                               pattern=cluster.RELEASE_LABEL_PATTERN,
                               description=f"EMR 7.x release (Spark 3.5), e.g. {cluster.DEFAULT_RELEASE_LABEL}."),
        "master_instance_type": Param(settings.emr_master_instance_type, type="string",
                                      pattern=cluster.INSTANCE_TYPE_PATTERN,
                                      description="Instance type of the primary node (runs YARN, not the jobs)."),
        "core_instance_type": Param(settings.emr_core_instance_type, type="string",
                                    pattern=cluster.INSTANCE_TYPE_PATTERN,
                                    description="Instance type of the core nodes (run the Spark executors)."),
        "core_instance_count": Param(settings.emr_core_instance_count, type="integer", minimum=0, maximum=200,
                                     description="Core nodes at start (0: everything on the primary node)."),
        "core_max_instance_count": Param(settings.emr_core_max_instance_count, type="integer", minimum=0,
                                         maximum=200,
                                         description="With a value above core_instance_count, EMR managed "
                                                     "scaling grows the core group up to this many nodes."),
        "core_spot": Param(settings.emr_core_spot, type="boolean",
                           description="Core nodes on Spot capacity (cheaper; a reclaimed node slows the "
                                       "run down or fails it)."),
        "idle_timeout": Param(settings.emr_idle_timeout, type="integer", minimum=MIN_RUN_IDLE_TIMEOUT,
                              maximum=cluster.MAX_IDLE_TIMEOUT,
                              description="Seconds without work after which EMR terminates the cluster by "
                                          "itself (a guard if Airflow cannot)."),
    }


def _attempts(timeout_seconds: int, poll_seconds: int) -> int:
    return max(1, math.ceil(timeout_seconds / poll_seconds))


def _bucket(settings: Settings, bucket: str):
    from fruits.storage import Bucket

    return Bucket.connect(settings.aws_conn_id, bucket)


def _aws(settings: Settings) -> dict:
    return {"aws_conn_id": settings.aws_conn_id, "region_name": "{{ params.region }}"}


def job_flow_request(*, bucket: str, batch_id: str, code: dict, settings: Settings, params: dict, run_id: str,
                     dag_id: str) -> dict:
    """The RunJobFlow request of a run's cluster, from its params (ValueError when refused)."""
    return cluster.job_flow_overrides(
        name=f"{dag_id} {layout.safe_run_id(run_id)}",
        release_label=params["release_label"],
        log_uri=cluster.log_uri(bucket, settings.emr_log_prefix),
        code=code["uris"],
        master_instance_type=params["master_instance_type"],
        core_instance_type=params["core_instance_type"],
        core_instance_count=int(params["core_instance_count"]),
        core_max_instance_count=int(params["core_max_instance_count"]),
        core_spot=bool(params["core_spot"]),
        idle_timeout=int(params["idle_timeout"]),
        job_flow_role=settings.emr_job_flow_role,
        service_role=settings.emr_service_role,
        subnet_id=settings.emr_subnet_id,
        tags=cluster.cluster_tags(run_id=run_id, dag_id=dag_id, batch_id=batch_id),
    )


def cluster_request(batch: contract.Batch, code: dict, settings: Settings, params: dict, run_id: str,
                    dag_id: str) -> dict:
    """The pipeline's RunJobFlow request and both steps (ValueError when refused)."""
    uris = code["uris"]
    overrides = job_flow_request(bucket=batch.bucket, batch_id=batch.batch_id, code=code, settings=settings,
                                 params=params, run_id=run_id, dag_id=dag_id)
    featurize = steps.featurize_step(code=uris, batch=batch, weights=params["weights"],
                                     image_size=int(params["image_size"]))
    pca = steps.pca_step(code=uris, batch=batch, run_id=run_id, pca_k=params["pca_k"],
                         pca_variance=params["pca_variance"])
    return {"job_flow_overrides": overrides, "featurize_steps": [featurize], "pca_steps": [pca]}


def classifier_request(pca_run: contract.PcaRun, code: dict, settings: Settings, params: dict, run_id: str,
                       dag_id: str) -> dict:
    """The classifier's RunJobFlow request and its one step (ValueError when refused)."""
    overrides = job_flow_request(bucket=pca_run.bucket, batch_id=pca_run.batch_id, code=code, settings=settings,
                                 params=params, run_id=run_id, dag_id=dag_id)
    return {"job_flow_overrides": overrides,
            "classify_steps": [steps.classify_step(code=code["uris"], pca_run=pca_run, run_id=run_id)]}


def _guard_and_code_tasks(record, settings: Settings):
    """check_region -> upload_code, for any record with a `bucket` (a batch, a PCA run)."""

    @task(retries=0)
    def check_region(record: dict, params: dict | None = None) -> dict:
        """Refuse a region (or a bucket) outside the EU before anything is created."""
        from airflow.sdk.exceptions import AirflowFailException

        allow = bool(params["allow_non_eu_region"])
        try:
            cluster_region = region.check_region(params["region"], allow)
            where = _bucket(settings, record["bucket"]).region()
            warning = region.check_bucket_region(record["bucket"], where, cluster_region, allow)
        except region.RegionNotAllowed as exc:
            raise AirflowFailException(str(exc)) from None  # deterministic: retrying cannot help
        if not region.is_eu_region(cluster_region) or not region.is_eu_region(where):
            log.warning("allow_non_eu_region=true: the cluster runs in %s, the bucket is in %s", cluster_region, where)
        if warning:
            log.warning(warning)
        return {"region": cluster_region, "bucket_region": where}

    @task
    def upload_code(record: dict, checked: dict) -> dict:
        from fruits.backends.emr import code

        uploaded = code.upload_code(_bucket(settings, record["bucket"]), settings.spark_jobs_dir)
        log.info("code version %s at %s: uploaded %s, already there %s", uploaded["version"],
                 uploaded["uris"]["prefix"], uploaded["uploaded"] or "nothing", uploaded["skipped"] or "nothing")
        return uploaded

    checked = check_region(record)
    return checked, upload_code(record, checked)


def _preparation_tasks(batch, settings: Settings):
    """check_region -> upload_code -> list_pca_inputs -> cluster_spec: the request, nothing created yet."""
    checked, code = _guard_and_code_tasks(batch, settings)

    @task
    def list_pca_inputs(batch: dict, checked: dict) -> str:
        """Write the list of features datasets the PCA step reads (committed batches + this one)."""
        from fruits.core import planning

        planned = contract.Batch.from_xcom(batch)
        bucket = _bucket(settings, planned.bucket)
        uri = steps.pca_inputs_uri(planned)
        bucket.write_text(bucket.key_of(uri), contract.features_list_text(planning.pca_input_uris(planned)))
        return uri

    @task(retries=0)
    def cluster_spec(batch: dict, code: dict, checked: dict, pca_inputs: str, params: dict | None = None,
                     run_id: str | None = None, dag_run=None) -> dict:
        """The RunJobFlow request and both steps, kept in XCom for review."""
        from airflow.sdk.exceptions import AirflowFailException

        try:
            spec = cluster_request(contract.Batch.from_xcom(batch), code, settings, params, run_id, dag_run.dag_id)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        return {"region": checked["region"], **spec}

    return code, cluster_spec(batch, code, checked, list_pca_inputs(batch, checked))


def _cluster_tasks(spec, settings: Settings, step_plan: list[tuple[str, int]]):
    """create_cluster, the steps (`step_plan`: name and timeout, in order; the spec holds
    `<name>_steps`) with their deferrable sensors, and the terminate teardown."""
    poll, aws = settings.emr_poll_seconds, _aws(settings)
    create = EmrCreateJobFlowOperator(
        task_id="create_cluster",
        emr_conn_id=settings.emr_conn_id,  # None: no EMR connection, the request is all in the overrides
        job_flow_overrides=spec["job_flow_overrides"],
        # Wait until the cluster is up (bootstrap done): a cluster that cannot start is terminated
        # here by terminate_job_flow_on_failure, and the run fails with EMR's reason.
        wait_for_completion=True,
        waiter_delay=poll,
        waiter_max_attempts=_attempts(settings.emr_startup_timeout, poll),
        deferrable=False,
        terminate_job_flow_on_failure=True,
        retries=0,  # a retry could start a second cluster while the first one is still provisioning
        execution_timeout=timedelta(seconds=settings.emr_startup_timeout + 600),
        **aws,
    )

    def add_step(task_id: str, step_list):
        return EmrAddStepsOperator(task_id=task_id, job_flow_id=create.output, steps=step_list,
                                   wait_for_completion=False, deferrable=False,
                                   execution_timeout=timedelta(minutes=10), **aws)

    def wait_step(task_id: str, adder: EmrAddStepsOperator, timeout_seconds: int):
        return EmrStepSensor(
            task_id=task_id,
            job_flow_id=create.output,
            step_id=f"{{{{ ti.xcom_pull(task_ids='{adder.task_id}')[0] }}}}",
            deferrable=True,  # polls from the triggerer: no worker slot held for hours
            poke_interval=poll,
            max_attempts=_attempts(timeout_seconds, poll),
            retries=0,  # a FAILED step stays failed; the next run plans the batch again
            execution_timeout=timedelta(seconds=timeout_seconds + 600),
            **aws,
        )

    adders, last_wait = [], None
    for name, timeout_seconds in step_plan:
        adder = add_step(f"add_{name}_step", spec[f"{name}_steps"])
        waiter = wait_step(f"wait_{name}", adder, timeout_seconds)
        if last_wait is not None:
            last_wait >> adder
        adder >> waiter
        adders.append(adder)
        last_wait = waiter

    terminate = EmrTerminateJobFlowOperator(
        task_id="terminate_cluster",
        job_flow_id=create.output,
        waiter_delay=poll,
        waiter_max_attempts=_attempts(TERMINATE_TIMEOUT, poll),
        deferrable=True,  # succeeds only once EMR reports the cluster TERMINATED
        retries=max(2, settings.task_retries),  # the one task where retrying is always right
        execution_timeout=timedelta(seconds=TERMINATE_TIMEOUT + 600),
        **aws,
    )
    # A teardown does not decide the run's state, except when it fails: a cluster that may
    # still be running must not go unnoticed.
    last_wait >> terminate.as_teardown(setups=create, on_failure_fail_dagrun=True)
    return create, adders, last_wait


def build(batch, settings: Settings):
    @task_group(group_id="emr")
    def emr(batch):
        code, spec = _preparation_tasks(batch, settings)
        create, (add_featurize, add_pca), wait_pca = _cluster_tasks(
            spec, settings, [("featurize", settings.emr_featurize_timeout), ("pca", settings.emr_pca_timeout)])

        @task
        def emr_outputs(batch: dict, code: dict, cluster_id: str, featurize_step_ids: list[str],
                        pca_step_ids: list[str], params: dict | None = None, run_id: str | None = None) -> dict:
            from airflow.providers.amazon.aws.hooks.emr import EmrHook

            planned = contract.Batch.from_xcom(batch)
            client = EmrHook(aws_conn_id=settings.aws_conn_id, region_name=params["region"]).conn
            described = client.describe_cluster(ClusterId=cluster_id)
            featurized = client.describe_step(ClusterId=cluster_id, StepId=featurize_step_ids[0])
            pca = client.describe_step(ClusterId=cluster_id, StepId=pca_step_ids[0])
            featurize_outputs = layout.featurize_outputs(planned.bucket, planned.batch_id)
            return contract.ComputeResult(
                pca_prefix=layout.pca_prefix(run_id),
                outputs={
                    "features": featurize_outputs.features,
                    "rejects": featurize_outputs.rejects,
                    **layout.pca_outputs(planned.bucket, run_id).uris(),
                    "emr_logs": f"{cluster.log_uri(planned.bucket, settings.emr_log_prefix)}{cluster_id}/",
                },
                stage_seconds={
                    "upload_code": code["seconds"],
                    "emr_startup": steps.startup_seconds(described),
                    "featurize": steps.step_seconds(featurized),
                    "pca": steps.step_seconds(pca),
                },
                details={"cluster_id": cluster_id, "code_version": code["version"]},
            ).to_xcom()

        outputs = emr_outputs(batch, code, create.output, add_featurize.output, add_pca.output)
        wait_pca >> outputs
        return outputs

    return emr(batch)


def build_classifier(pca_run, settings: Settings):
    @task_group(group_id="emr")
    def emr(pca_run):
        checked, code = _guard_and_code_tasks(pca_run, settings)

        @task(retries=0)
        def classifier_spec(pca_run: dict, code: dict, checked: dict, params: dict | None = None,
                            run_id: str | None = None, dag_run=None) -> dict:
            """The RunJobFlow request and the classify step, kept in XCom for review."""
            from airflow.sdk.exceptions import AirflowFailException

            try:
                spec = classifier_request(contract.PcaRun.from_xcom(pca_run), code, settings, params, run_id,
                                          dag_run.dag_id)
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from None
            return {"region": checked["region"], **spec}

        spec = classifier_spec(pca_run, code, checked)
        create, (add_classify,), wait_classify = _cluster_tasks(
            spec, settings, [("classify", settings.emr_classify_timeout)])

        @task
        def emr_outputs(pca_run: dict, code: dict, cluster_id: str, classify_step_ids: list[str],
                        params: dict | None = None, run_id: str | None = None) -> dict:
            from airflow.providers.amazon.aws.hooks.emr import EmrHook

            chosen = contract.PcaRun.from_xcom(pca_run)
            client = EmrHook(aws_conn_id=settings.aws_conn_id, region_name=params["region"]).conn
            described = client.describe_cluster(ClusterId=cluster_id)
            classified = client.describe_step(ClusterId=cluster_id, StepId=classify_step_ids[0])
            return contract.ComputeResult(
                pca_prefix=chosen.pca_prefix,
                outputs={**layout.classifier_outputs(chosen.bucket, run_id).uris(),
                         "emr_logs": f"{cluster.log_uri(chosen.bucket, settings.emr_log_prefix)}{cluster_id}/"},
                stage_seconds={"upload_code": code["seconds"], "emr_startup": steps.startup_seconds(described),
                               "classify": steps.step_seconds(classified)},
                details={"cluster_id": cluster_id, "code_version": code["version"]},
            ).to_xcom()

        outputs = emr_outputs(pca_run, code, create.output, add_classify.output)
        wait_classify >> outputs
        return outputs

    return emr(pca_run)
