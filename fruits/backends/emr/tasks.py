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

Four independent guards keep a cluster from outliving its run:
  1. `terminate_cluster` is a teardown task: it runs when the steps succeeded, failed or timed
     out, and when a run is marked failed by hand (a failed step still fails the run);
     the run's timeout cannot cut it (budget.py: checked at parse time, and by the spec task
     right before the cluster is created);
  2. `create_cluster` waits for the cluster to be ready with `terminate_job_flow_on_failure`:
     a cluster that fails to start (bootstrap, capacity, timeout) is terminated right there;
  3. the cluster's own `AutoTerminationPolicy` ends it after `idle_timeout` seconds without
     work, even if Airflow itself is gone.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, timedelta

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.sdk import Param, task, task_group

from fruits import contract, layout, plan
from fruits.backends.emr import budget, cluster, limits, region, steps
from fruits.backends.emr.sensors import EmrStepSensorWithLogs
from fruits.settings import Settings

log = logging.getLogger(__name__)

# Idle time that may separate the two steps (sensor poll + scheduling): a shorter idle timeout
# could let EMR end the cluster between featurize and PCA.
MIN_RUN_IDLE_TIMEOUT = 600


def params(settings: Settings) -> dict[str, Param]:
    """EMR params of the trigger form; defaults from the FRUITS_EMR_* settings, choices limited to
    what the deployment allows (regions, instance types, node counts)."""
    region.check_region(settings.emr_region, settings.emr_allowed_regions)  # a bad default: import error
    limits.check_defaults(settings)
    instance_types = list(settings.emr_allowed_instance_types)
    return {
        # A pattern, not an enum: check_region refuses another region with a message that says why
        # (the data must stay in the EU) and which deployment setting could change that.
        "region": Param(
            settings.emr_region,
            type="string",
            pattern=region.REGION_PATTERN,
            examples=list(settings.emr_allowed_regions),
            description="AWS region of the EMR cluster, ideally the bucket's: one of the regions "
            "the deployment allows (FRUITS_EMR_ALLOWED_REGIONS; by default the EU "
            "member states' regions).",
        ),
        "release_label": Param(
            settings.emr_release_label,
            type="string",
            pattern=cluster.RELEASE_LABEL_PATTERN,
            description=f"EMR 7.x release (Spark 3.5), e.g. {cluster.DEFAULT_RELEASE_LABEL}.",
        ),
        "master_instance_type": Param(
            settings.emr_master_instance_type,
            type="string",
            enum=instance_types,
            description="Instance type of the primary node (runs YARN, not the jobs).",
        ),
        "core_instance_type": Param(
            settings.emr_core_instance_type,
            type="string",
            enum=instance_types,
            description="Instance type of the core nodes (run the Spark executors).",
        ),
        "core_instance_count": Param(
            settings.emr_core_instance_count,
            type="integer",
            minimum=0,
            maximum=settings.emr_max_core_nodes,
            description="Core nodes at start (0: everything on the primary node; at most FRUITS_EMR_MAX_CORE_NODES).",
        ),
        "core_max_instance_count": Param(
            settings.emr_core_max_instance_count,
            type="integer",
            minimum=0,
            maximum=settings.emr_max_core_nodes,
            description="With a value above core_instance_count, EMR managed "
            "scaling grows the core group up to this many nodes.",
        ),
        "core_spot": Param(
            settings.emr_core_spot,
            type="boolean",
            description="Core nodes on Spot capacity (cheaper; a reclaimed node slows the run down or fails it).",
        ),
        "idle_timeout": Param(
            settings.emr_idle_timeout,
            type="integer",
            minimum=MIN_RUN_IDLE_TIMEOUT,
            maximum=cluster.MAX_IDLE_TIMEOUT,
            description="Seconds without work after which EMR terminates the cluster by "
            "itself (a guard if Airflow cannot).",
        ),
    }


def _attempts(timeout_seconds: int, poll_seconds: int) -> int:
    return max(1, math.ceil(timeout_seconds / poll_seconds))


def _bucket(settings: Settings, bucket: str):
    from fruits.storage import Bucket

    return Bucket.connect(settings.aws_conn_id, bucket)


def _aws(settings: Settings) -> dict:
    return {"aws_conn_id": settings.aws_conn_id, "region_name": "{{ params.region }}"}


def reserved_seconds(settings: Settings) -> int:
    """What a pipeline run needs after its sensor (fruits.params caps sensor_timeout with it);
    RunTimeoutTooShort when even a run that finds images at once could not fit its teardown."""
    budget.check_fits(
        "fruits_pipeline",
        timedelta(seconds=settings.run_timeout),
        budget.cluster_seconds(settings, budget.pipeline_steps(settings)),
    )
    return budget.reserved_seconds(settings)


def job_flow_request(
    *, bucket: str, batch_id: str, code: dict, settings: Settings, params: dict, run_id: str, dag_id: str
) -> dict:
    """The RunJobFlow request of a run's cluster, from its params (ValueError when refused)."""
    limits.check_cluster_params(params, settings)
    overrides = cluster.job_flow_overrides(
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
    # A node without its architecture's wheels would fail its bootstrap minutes after being billed.
    missing = set(cluster.node_architectures(overrides["Instances"]["InstanceGroups"])) - set(code["architectures"])
    if missing:
        raise ValueError(
            f"no {', '.join(sorted(missing))} wheelhouse was uploaded for this run (upload_code had "
            f"{', '.join(code['architectures']) or 'none'}): no cluster was created"
        )
    return overrides


def upload_run_code(bucket, settings: Settings, params: dict) -> dict:
    """upload_code's work: the code version, and the wheelhouse of each architecture the run's nodes
    have (from settings.emr_wheelhouse; WheelhouseNotReady, never PyPI, when it is not there)."""
    from fruits.backends.emr import code

    return code.upload_code(
        bucket,
        settings.spark_jobs_dir,
        wheelhouse_root=settings.emr_wheelhouse,
        architectures=node_architectures(params),
    )


def node_architectures(params: dict) -> list[str]:
    """The architectures of the nodes a run's params ask for (Graviton types are aarch64)."""
    return cluster.node_architectures(
        cluster.instance_groups(
            master_instance_type=params["master_instance_type"],
            core_instance_type=params["core_instance_type"],
            core_instance_count=int(params["core_instance_count"]),
            core_spot=bool(params.get("core_spot")),
        )
    )


def cluster_request(
    record: contract.Batch | contract.PcaRun,
    jobs: list[plan.Job],
    *,
    code: dict,
    settings: Settings,
    params: dict,
    run_id: str,
    dag_id: str,
) -> dict:
    """A run's RunJobFlow request (for the batch or PCA run `record`) and a step per planned job
    (ValueError when refused)."""
    overrides = job_flow_request(
        bucket=record.bucket,
        batch_id=record.batch_id,
        code=code,
        settings=settings,
        params=params,
        run_id=run_id,
        dag_id=dag_id,
    )
    return {
        "job_flow_overrides": overrides,
        "jobs": [job.to_xcom() for job in jobs],
        **{f"{job.name}_steps": [steps.job_step(job, code["uris"])] for job in jobs},
    }


def cluster_result(
    jobs: list[dict],
    step_ids: dict[str, str],
    *,
    bucket: str,
    pca_prefix: str,
    code: dict,
    cluster_id: str,
    region: str,
    settings: Settings,
) -> dict:
    """The ComputeResult of a cluster's run: its jobs' outputs, its logs, and the stages' seconds
    from EMR's own timelines (cluster start-up, then each step)."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    client = EmrHook(aws_conn_id=settings.aws_conn_id, region_name=region).conn
    seconds = {
        "upload_code": code["seconds"],
        "emr_startup": steps.startup_seconds(client.describe_cluster(ClusterId=cluster_id)),
    }
    for name, step_id in step_ids.items():
        seconds[name] = steps.step_seconds(client.describe_step(ClusterId=cluster_id, StepId=step_id))
    return plan.compute_result(
        jobs,
        pca_prefix=pca_prefix,
        stage_seconds=seconds,
        extra_outputs={"emr_logs": f"{cluster.log_uri(bucket, settings.emr_log_prefix)}{cluster_id}/"},
        details={"cluster_id": cluster_id, "code_version": code["version"]},
    ).to_xcom()


def _guard_and_code_tasks(record, settings: Settings):
    """check_region -> upload_code, for any record with a `bucket` (a batch, a PCA run)."""

    @task(retries=0)
    def check_region(record: dict, params: dict | None = None) -> dict:
        """Refuse a region (or a bucket) the deployment does not allow, and a cluster beyond its
        limits, before anything is uploaded or created."""
        from fruits import params as run_params

        allowed = settings.emr_allowed_regions
        run_params.check_bucket_name(record["bucket"])
        limits.check_cluster_params(params, settings)
        cluster_region = region.check_region(params["region"], allowed)
        where = _bucket(settings, record["bucket"]).region()
        warning = region.check_bucket_region(record["bucket"], where, cluster_region, allowed)
        if not region.is_eu_region(cluster_region) or not region.is_eu_region(where):
            log.warning(
                "outside the EU (allowed by FRUITS_EMR_ALLOWED_REGIONS): the cluster runs in %s, the bucket is in %s",
                cluster_region,
                where,
            )
        if warning:
            log.warning(warning)
        return {"region": cluster_region, "bucket_region": where}

    @task
    def upload_code(record: dict, checked: dict, params: dict | None = None) -> dict:
        """The code version and the wheelhouse of the architectures the run's instance types need
        (code.CodeMismatch, wheelhouse.WheelhouseNotReady: permanent errors, the task fails at once)."""
        uploaded = upload_run_code(_bucket(settings, record["bucket"]), settings, params)
        wheels = uploaded["wheelhouse"]
        log.info(
            "code version %s at %s: uploaded %s, already there %s",
            uploaded["version"],
            uploaded["uris"]["prefix"],
            uploaded["uploaded"] or "nothing",
            uploaded["skipped"] or "nothing",
        )
        log.info(
            "wheelhouse %s for %s at %s: %d wheels uploaded, %d already there",
            wheels["key"],
            ", ".join(uploaded["architectures"]),
            uploaded["uris"]["wheelhouse"],
            len(wheels["uploaded"]),
            len(wheels["skipped"]),
        )
        return uploaded

    checked = check_region(record)
    return checked, upload_code(record, checked)


def _preparation_tasks(batch, settings: Settings):
    """check_region -> upload_code -> list_pca_inputs -> cluster_spec: the request, nothing created yet."""
    checked, code = _guard_and_code_tasks(batch, settings)

    @task
    def list_pca_inputs(batch: dict, checked: dict) -> str:
        """Write the list of features datasets the PCA step reads (committed batches + this one)."""
        planned = contract.Batch.from_xcom(batch)
        return plan.write_pca_inputs(_bucket(settings, planned.bucket), planned)

    @task(retries=0)
    def cluster_spec(
        batch: dict,
        code: dict,
        checked: dict,
        pca_inputs: str,
        params: dict | None = None,
        run_id: str | None = None,
        dag_run=None,
        dag=None,
    ) -> dict:
        """The RunJobFlow request and both steps, kept in XCom for review; refused when the Params are
        not valid or the run has not enough time left for the cluster and its teardown."""
        from fruits import params as run_params
        from fruits.backends import emr

        run_params.check_run_params(params, settings, emr)
        ensure_time_left(dag_run, dag, settings, budget.pipeline_steps(settings))
        planned = contract.Batch.from_xcom(batch)
        jobs = plan.pipeline_jobs(planned, run_id, params)
        spec = cluster_request(
            planned, jobs, code=code, settings=settings, params=params, run_id=run_id, dag_id=dag_run.dag_id
        )
        return {"region": checked["region"], **spec}

    return code, cluster_spec(batch, code, checked, list_pca_inputs(batch, checked))


def ensure_time_left(dag_run, dag, settings: Settings, step_plan: list[tuple[str, int]]) -> None:
    """Right before create_cluster: the cluster's worst case must fit in what is left of the run
    (budget.RunTimeoutTooShort, a ValueError, otherwise)."""
    from datetime import datetime

    left = budget.check_time_left(
        started=dag_run.start_date,
        now=datetime.now(UTC),
        run_timeout=dag.dagrun_timeout,
        needed=budget.cluster_seconds(settings, step_plan),
    )
    if left is not None:
        log.info("%.0fs left before the run's timeout: enough for the cluster and its teardown", left)


def _cluster_tasks(spec, settings: Settings, step_plan: list[tuple[str, int]]):
    """create_cluster, the steps (`step_plan`: name and timeout, in order; the spec holds
    `<name>_steps`) with their deferrable sensors, and the terminate teardown. Their timeouts and
    retries are budget.cluster_tasks', whose worst case must fit in the DAG's dagrun_timeout."""
    poll, aws = settings.emr_poll_seconds, _aws(settings)
    planned = {t.task_id: t for t in budget.cluster_tasks(settings, step_plan)}

    def limits_of(task_id: str) -> dict:
        return {
            "execution_timeout": timedelta(seconds=planned[task_id].timeout),
            "retries": planned[task_id].retries,
            "retry_delay": timedelta(minutes=1),
            "max_retry_delay": timedelta(seconds=budget.MAX_RETRY_DELAY),
        }

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
        # retries 0: a retry could start a second cluster while the first one is still provisioning
        **limits_of("create_cluster"),
        **aws,
    )
    budget.check_fits(create.dag.dag_id, create.dag.dagrun_timeout, budget.cluster_seconds(settings, step_plan))

    def add_step(task_id: str, step_list):
        return EmrAddStepsOperator(
            task_id=task_id,
            job_flow_id=create.output,
            steps=step_list,
            wait_for_completion=False,
            deferrable=False,
            **limits_of(task_id),
            **aws,
        )

    def wait_step(task_id: str, adder: EmrAddStepsOperator, timeout_seconds: int):
        return EmrStepSensorWithLogs(
            task_id=task_id,
            job_flow_id=create.output,
            step_id=f"{{{{ ti.xcom_pull(task_ids='{adder.task_id}')[0] }}}}",
            deferrable=True,  # polls from the triggerer: no worker slot held for hours
            poke_interval=poll,
            max_attempts=_attempts(timeout_seconds, poll),
            # a failed step: its logs, read from the cluster's LogUri, say why (step_logs.py)
            logs_conn_id=settings.aws_conn_id,
            log_wait_seconds=settings.emr_log_wait,
            log_poll_seconds=poll,
            # retries 0: a FAILED step stays failed; the next run plans the batch again
            **limits_of(task_id),
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
        waiter_max_attempts=_attempts(budget.TERMINATE_TIMEOUT, poll),
        deferrable=True,  # succeeds only once EMR reports the cluster TERMINATED
        **limits_of("terminate_cluster"),  # retries: the one task where retrying is always right
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
        create, (add_featurize, add_pca), wait_pca = _cluster_tasks(spec, settings, budget.pipeline_steps(settings))

        @task
        def emr_outputs(
            batch: dict,
            jobs: list[dict],
            code: dict,
            cluster_id: str,
            featurize_step_ids: list[str],
            pca_step_ids: list[str],
            params: dict | None = None,
            run_id: str | None = None,
        ) -> dict:
            planned = contract.Batch.from_xcom(batch)
            return cluster_result(
                jobs,
                {"featurize": featurize_step_ids[0], "pca": pca_step_ids[0]},
                bucket=planned.bucket,
                pca_prefix=layout.pca_prefix(run_id),
                code=code,
                cluster_id=cluster_id,
                region=params["region"],
                settings=settings,
            )

        outputs = emr_outputs(batch, spec["jobs"], code, create.output, add_featurize.output, add_pca.output)
        wait_pca >> outputs
        return outputs

    return emr(batch)


def build_classifier(pca_run, settings: Settings):
    @task_group(group_id="emr")
    def emr(pca_run):
        checked, code = _guard_and_code_tasks(pca_run, settings)

        @task(retries=0)
        def classifier_spec(
            pca_run: dict,
            code: dict,
            checked: dict,
            params: dict | None = None,
            run_id: str | None = None,
            dag_run=None,
            dag=None,
        ) -> dict:
            """The RunJobFlow request and the classify step, kept in XCom for review; refused when
            the Params are not valid or the run has not enough time left for the cluster and its teardown."""
            from fruits import params as run_params

            run_params.check_classifier_params(params)
            ensure_time_left(dag_run, dag, settings, budget.classifier_steps(settings))
            chosen = contract.PcaRun.from_xcom(pca_run)
            jobs = [plan.classify_job(chosen, run_id)]
            spec = cluster_request(
                chosen, jobs, code=code, settings=settings, params=params, run_id=run_id, dag_id=dag_run.dag_id
            )
            return {"region": checked["region"], **spec}

        spec = classifier_spec(pca_run, code, checked)
        create, (add_classify,), wait_classify = _cluster_tasks(spec, settings, budget.classifier_steps(settings))

        @task
        def emr_outputs(
            pca_run: dict,
            jobs: list[dict],
            code: dict,
            cluster_id: str,
            classify_step_ids: list[str],
            params: dict | None = None,
        ) -> dict:
            chosen = contract.PcaRun.from_xcom(pca_run)
            return cluster_result(
                jobs,
                {"classify": classify_step_ids[0]},
                bucket=chosen.bucket,
                pca_prefix=chosen.pca_prefix,
                code=code,
                cluster_id=cluster_id,
                region=params["region"],
                settings=settings,
            )

        outputs = emr_outputs(pca_run, spec["jobs"], code, create.output, add_classify.output)
        wait_classify >> outputs
        return outputs

    return emr(pca_run)
