"""The clusters' steps (command-runner.jar `spark-submit` of the run's jobs, as `fruits.plan`
builds them: featurize.py, then pca.py; classify.py on the classifier DAG's cluster) and their
timings from EMR's own timelines."""

from __future__ import annotations

from fruits.plan import Job

# EMR's limit on one step argument (HadoopJarStepConfig.Args members, XmlString max 10280).
MAX_STEP_ARG = 10280


def spark_submit_step(*, name: str, app_name: str, script: str, py_files: str, job_args: list[str]) -> dict:
    """A command-runner.jar step that runs `spark-submit` in YARN cluster mode on the cluster."""
    args = [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--name",
        app_name,
        "--py-files",
        py_files,
        script,
        *[str(a) for a in job_args],
    ]
    too_long = [a[:80] + "..." for a in args if len(a) > MAX_STEP_ARG]
    if too_long:
        raise ValueError(f"step {name!r}: an argument exceeds EMR's {MAX_STEP_ARG} characters: {too_long}")
    # CONTINUE: a failed step leaves the cluster to the DAG's teardown task, which terminates it.
    return {
        "Name": name[:256],
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def job_step(job: Job, code: dict[str, str]) -> dict:
    """A job of the run's plan (`fruits.plan`) as a step: its script and `--py-files` from the
    uploaded code version (`code`: the script URIs by job name, and `py_files`)."""
    return spark_submit_step(
        name=f"fruits {job.name} {job.subject}",
        app_name=job.app_name,
        script=code[job.name],
        py_files=code["py_files"],
        job_args=job.args,
    )


def _seconds(timeline: dict, start: str, end: str) -> float | None:
    if timeline.get(start) is None or timeline.get(end) is None:
        return None
    return round((timeline[end] - timeline[start]).total_seconds(), 2)


def step_seconds(describe_step: dict) -> float | None:
    """Run time of a step (DescribeStep's Timeline StartDateTime -> EndDateTime)."""
    return _seconds(describe_step["Step"]["Status"].get("Timeline", {}), "StartDateTime", "EndDateTime")


def startup_seconds(describe_cluster: dict) -> float | None:
    """Provisioning + bootstrap time of the cluster (CreationDateTime -> ReadyDateTime)."""
    return _seconds(describe_cluster["Cluster"]["Status"].get("Timeline", {}), "CreationDateTime", "ReadyDateTime")
