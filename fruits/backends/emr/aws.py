"""EMR compute backend (FRUITS_COMPUTE=emr): everything the DAG sends to AWS, without Airflow.

    code        spark_jobs/ -> s3://<bucket>/code/<version>/, content-addressed, uploaded once
    region      EU regions only, unless a run explicitly allows another region
    cluster     the RunJobFlow request: release, instances, bootstrap action, Spark
                configurations, LogUri, idle auto-termination, tags
    steps       command-runner.jar `spark-submit` of featurize.py, then pca.py, on s3:// URIs
    timings     seconds of the cluster start-up and of each step, from EMR's own timelines
    IAM         the least-privilege policy of the role Airflow runs with (shown in docs/emr.md)

Only `upload_code` and `bucket_region` talk to AWS, through the S3 hook they are given; the rest
are pure functions of their arguments, so the tests check them without a cluster.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fruits import layout, storage

PROJECT_TAG = "fruits-pipeline"
# EMR 7.x = Spark 3.5; 7.13.0 (April 2026) ships Spark 3.5.6 and Python 3.9 + 3.11 on Amazon Linux 2023.
DEFAULT_RELEASE_LABEL = "emr-7.13.0"
RELEASE_LABEL_PATTERN = r"^emr-7\.[0-9]+\.[0-9]+$"
DEFAULT_REGION = "eu-west-3"  # Paris
# Commercial AWS regions in the European Union, offered by the trigger form.
EU_REGIONS = ("eu-west-3", "eu-west-1", "eu-central-1", "eu-north-1", "eu-south-1", "eu-south-2",
              "eu-central-2", "eu-west-2")
REGION_PATTERN = r"^[a-z]{2,5}(-[a-z]+)+-[0-9]+$"
INSTANCE_TYPE_PATTERN = r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"
MIN_IDLE_TIMEOUT, MAX_IDLE_TIMEOUT = 60, 7 * 24 * 3600  # AutoTerminationPolicy bounds

# What bootstrap.sh installs on every node, and what Spark's Python workers must run.
VENV_DIR = "/opt/fruits/venv"
PYTHON = f"{VENV_DIR}/bin/python3"

# Files of a code version (names under code/<version>/).
PACKAGE = "fruits_spark"
PACKAGE_ZIP = f"{PACKAGE}.zip"
FEATURIZE = "featurize.py"
PCA = "pca.py"
BOOTSTRAP = "bootstrap.sh"
REQUIREMENTS = "requirements-emr.txt"
EMR_DIR = "emr"  # spark_jobs/emr/ holds the bootstrap script and the requirements
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip bytes

# EMR's limit on one step argument (HadoopJarStepConfig.Args members, XmlString max 10280).
MAX_STEP_ARG = 10280


class RegionNotAllowed(ValueError):
    """A region the data must not go to (or no region at all)."""


# ----------------------------------------------------------------------------- region guard

def is_eu_region(region: str) -> bool:
    return re.fullmatch(r"eu-[a-z]+-[0-9]+", region or "") is not None


def check_region(region: str, allow_non_eu: bool = False) -> str:
    """The region to create the cluster in, or RegionNotAllowed with what to do instead."""
    region = (region or "").strip()
    if not re.fullmatch(REGION_PATTERN, region):
        raise RegionNotAllowed(f"{region!r} is not an AWS region name (expected e.g. {DEFAULT_REGION})")
    if is_eu_region(region) or allow_non_eu:
        return region
    raise RegionNotAllowed(
        f"EMR region {region} is outside the EU: the fruit images and every output must stay in the EU, "
        f"so no cluster was created. Use an EU region (default {DEFAULT_REGION}, Paris; also "
        f"{', '.join(r for r in EU_REGIONS if r != DEFAULT_REGION)}), or, if processing outside the EU "
        f"has been approved, trigger the run with allow_non_eu_region=true.")


def bucket_region(hook, bucket: str) -> str:
    """The region of `bucket` (GetBucketLocation answers None for us-east-1 and 'EU' for eu-west-1)."""
    location = hook.get_conn().get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def check_bucket_region(bucket: str, region_of_bucket: str, cluster_region: str,
                        allow_non_eu: bool = False) -> str | None:
    """Refuse a bucket outside the EU; return a warning when it is not in the cluster's region."""
    if not is_eu_region(region_of_bucket) and not allow_non_eu:
        raise RegionNotAllowed(
            f"bucket {bucket} is in {region_of_bucket}, outside the EU: the images and outputs must stay in "
            f"the EU, so no cluster was created (allow_non_eu_region=true overrides this check)")
    if region_of_bucket != cluster_region:
        return (f"bucket {bucket} is in {region_of_bucket} but the cluster would run in {cluster_region}: "
                f"every image and output crosses regions (inter-region transfer is billed, and slower)")
    return None


# ----------------------------------------------------------------------------- code upload

@dataclass(frozen=True)
class CodeBundle:
    version: str
    files: dict[str, bytes]  # name under code/<version>/ -> content


def source_files(spark_jobs_dir: Path) -> dict[str, Path]:
    """The files whose content defines a code version (relative POSIX name -> path)."""
    spark_jobs_dir = Path(spark_jobs_dir)
    files = {name: spark_jobs_dir / name for name in (FEATURIZE, PCA)}
    for path in sorted((spark_jobs_dir / PACKAGE).glob("*.py")):
        files[f"{PACKAGE}/{path.name}"] = path
    for name in (BOOTSTRAP, REQUIREMENTS):
        files[f"{EMR_DIR}/{name}"] = spark_jobs_dir / EMR_DIR / name
    missing = sorted(str(path) for path in files.values() if not path.is_file())
    if missing or f"{PACKAGE}/__init__.py" not in files:
        raise FileNotFoundError(f"Spark job sources missing under {spark_jobs_dir}: {missing or PACKAGE}")
    return files


def code_version(sources: dict[str, bytes]) -> str:
    """Content hash of the sources (names included): any edit gives a new version."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        data = sources[name]
        digest.update(f"{name}\0{len(data)}\0".encode("utf-8"))
        digest.update(data)
    return digest.hexdigest()[:16]


def package_zip(modules: dict[str, bytes]) -> bytes:
    """A zip of the package for `--py-files`, byte-identical for identical sources."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(modules):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, modules[name])
    return buffer.getvalue()


def code_bundle(spark_jobs_dir: Path) -> CodeBundle:
    sources = {name: path.read_bytes() for name, path in source_files(spark_jobs_dir).items()}
    files = {
        FEATURIZE: sources[FEATURIZE],
        PCA: sources[PCA],
        PACKAGE_ZIP: package_zip({n: data for n, data in sources.items() if n.startswith(PACKAGE + "/")}),
        BOOTSTRAP: sources[f"{EMR_DIR}/{BOOTSTRAP}"],
        REQUIREMENTS: sources[f"{EMR_DIR}/{REQUIREMENTS}"],
    }
    return CodeBundle(version=code_version(sources), files=files)


def code_prefix(version: str) -> str:
    return f"code/{version}/"


def code_uris(bucket: str, version: str) -> dict[str, str]:
    prefix = code_prefix(version)
    return {
        "prefix": layout.s3_uri(bucket, prefix),
        "featurize": layout.s3_uri(bucket, prefix + FEATURIZE),
        "pca": layout.s3_uri(bucket, prefix + PCA),
        "py_files": layout.s3_uri(bucket, prefix + PACKAGE_ZIP),
        "bootstrap": layout.s3_uri(bucket, prefix + BOOTSTRAP),
        "requirements": layout.s3_uri(bucket, prefix + REQUIREMENTS),
    }


def upload_code(hook, bucket: str, spark_jobs_dir: Path) -> dict:
    """Upload this checkout's code version unless it is already there (one listing, no overwrite)."""
    started = time.perf_counter()
    bundle = code_bundle(spark_jobs_dir)
    prefix = code_prefix(bundle.version)
    existing = set(storage.list_keys(hook, bucket, prefix))
    uploaded, skipped = [], []
    for name, data in bundle.files.items():
        if prefix + name in existing:
            skipped.append(name)
            continue
        hook.load_bytes(data, key=prefix + name, bucket_name=bucket, replace=True)
        uploaded.append(name)
    return {"version": bundle.version, "uris": code_uris(bucket, bundle.version), "uploaded": uploaded,
            "skipped": skipped, "seconds": round(time.perf_counter() - started, 2)}


# ----------------------------------------------------------------------------- cluster

def tag_value(value: str) -> str:
    """EMR tag values allow letters, digits, spaces and + - = . _ : / @ (at most 256 characters)."""
    return re.sub(r"[^\w +\-=.:/@]", "_", str(value))[:256]


def cluster_tags(*, run_id: str, dag_id: str, batch_id: str) -> list[dict[str, str]]:
    return [
        {"Key": "project", "Value": PROJECT_TAG},
        {"Key": "dag_id", "Value": tag_value(dag_id)},
        {"Key": "run_id", "Value": tag_value(run_id)},
        {"Key": "batch_id", "Value": tag_value(batch_id)},
        # Required on the cluster when the service role uses the AmazonEMRServicePolicy_v2 managed policy.
        {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"},
    ]


def spark_configurations(python: str = PYTHON) -> list[dict]:
    """Spark's driver and Python workers run the bootstrap's interpreter, with a one-thread BLAS."""
    env = {"PYSPARK_PYTHON": python, "TF_CPP_MIN_LOG_LEVEL": "2", "OPENBLAS_NUM_THREADS": "1"}
    defaults = {"spark.pyspark.python": python, "spark.pyspark.driver.python": python}
    for name, value in env.items():
        defaults[f"spark.executorEnv.{name}"] = value
        defaults[f"spark.yarn.appMasterEnv.{name}"] = value  # the driver, in cluster deploy mode
    return [
        {"Classification": "spark-env", "Properties": {},
         "Configurations": [{"Classification": "export", "Properties": dict(env)}]},
        {"Classification": "spark-defaults", "Properties": defaults},
    ]


def instance_groups(*, master_instance_type: str, core_instance_type: str, core_instance_count: int,
                    core_spot: bool) -> list[dict]:
    groups = [{"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
               "InstanceType": master_instance_type, "InstanceCount": 1}]
    if core_instance_count > 0:
        # Spot without BidPrice: capped at the On-Demand price.
        groups.append({"Name": "core", "InstanceRole": "CORE", "Market": "SPOT" if core_spot else "ON_DEMAND",
                       "InstanceType": core_instance_type, "InstanceCount": core_instance_count})
    return groups


def job_flow_overrides(*, name: str, release_label: str, log_uri: str, code: dict[str, str],
                       master_instance_type: str, core_instance_type: str, core_instance_count: int,
                       core_spot: bool, idle_timeout: int, job_flow_role: str, service_role: str,
                       tags: list[dict[str, str]], subnet_id: str | None = None,
                       core_max_instance_count: int = 0) -> dict:
    """The RunJobFlow request of one run's transient cluster."""
    if not re.fullmatch(RELEASE_LABEL_PATTERN, release_label):
        raise ValueError(f"release label {release_label!r} is not an EMR 7.x release (Spark 3.5), e.g. "
                         f"{DEFAULT_RELEASE_LABEL}")
    if not MIN_IDLE_TIMEOUT <= idle_timeout <= MAX_IDLE_TIMEOUT:
        raise ValueError(f"idle_timeout must be between {MIN_IDLE_TIMEOUT} and {MAX_IDLE_TIMEOUT} seconds")
    if core_instance_count < 0:
        raise ValueError("core_instance_count cannot be negative")
    instances = {
        "InstanceGroups": instance_groups(
            master_instance_type=master_instance_type, core_instance_type=core_instance_type,
            core_instance_count=core_instance_count, core_spot=core_spot),
        # Steps are added after creation: without this the cluster would end before the first one.
        "KeepJobFlowAliveWhenNoSteps": True,
        "TerminationProtected": False,
    }
    if subnet_id:
        instances["Ec2SubnetId"] = subnet_id
    overrides = {
        "Name": name[:256],
        "ReleaseLabel": release_label,
        "Applications": [{"Name": "Spark"}],
        "LogUri": log_uri,
        "Instances": instances,
        "BootstrapActions": [{
            "Name": "fruits-python-dependencies",
            "ScriptBootstrapAction": {"Path": code["bootstrap"], "Args": [code["requirements"]]},
        }],
        "Configurations": spark_configurations(),
        "JobFlowRole": job_flow_role,
        "ServiceRole": service_role,
        "VisibleToAllUsers": True,
        "StepConcurrencyLevel": 1,
        # Guard against a forgotten cluster: EMR ends it itself after this long without work.
        "AutoTerminationPolicy": {"IdleTimeout": int(idle_timeout)},
        "Tags": tags,
    }
    if core_max_instance_count > core_instance_count > 0:
        # Managed scaling: the core group grows with the work (YARN demand) up to the maximum.
        overrides["ManagedScalingPolicy"] = {"ComputeLimits": {
            "UnitType": "Instances", "MinimumCapacityUnits": core_instance_count,
            "MaximumCapacityUnits": core_max_instance_count, "MaximumCoreCapacityUnits": core_max_instance_count,
        }}
    return overrides


def log_uri(bucket: str, log_prefix: str) -> str:
    return layout.s3_uri(bucket, log_prefix if log_prefix.endswith("/") else log_prefix + "/")


# ----------------------------------------------------------------------------- steps

def spark_submit_step(*, name: str, app_name: str, script: str, py_files: str, job_args: list[str]) -> dict:
    """A command-runner.jar step that runs `spark-submit` in YARN cluster mode on the cluster."""
    args = ["spark-submit", "--deploy-mode", "cluster", "--name", app_name, "--py-files", py_files,
            script, *[str(a) for a in job_args]]
    too_long = [a[:80] + "..." for a in args if len(a) > MAX_STEP_ARG]
    if too_long:
        raise ValueError(f"step {name!r}: an argument exceeds EMR's {MAX_STEP_ARG} characters: {too_long}")
    # CONTINUE: a failed step leaves the cluster to the DAG's teardown task, which terminates it.
    return {"Name": name[:256], "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def featurize_outputs(bucket: str, batch_id: str) -> dict[str, str]:
    return {"manifest": layout.s3_uri(bucket, layout.manifest_key(batch_id)),
            "features": layout.s3_uri(bucket, layout.features_prefix(batch_id)),
            "rejects": layout.s3_uri(bucket, layout.rejects_prefix(batch_id))}


def pca_outputs(bucket: str, run_id: str) -> dict[str, str]:
    prefix = layout.pca_prefix(run_id)
    return {"prefix": layout.s3_uri(bucket, prefix), "vectors": layout.s3_uri(bucket, prefix + "vectors"),
            "model": layout.s3_uri(bucket, prefix + "model"), "report": layout.s3_uri(bucket, prefix + "report.json")}


def featurize_step(*, code: dict[str, str], bucket: str, batch_id: str, weights: str, image_size: int) -> dict:
    out = featurize_outputs(bucket, batch_id)
    return spark_submit_step(
        name=f"fruits featurize {batch_id}", app_name="fruits-featurize", script=code["featurize"],
        py_files=code["py_files"],
        job_args=["--manifest", out["manifest"], "--output", out["features"], "--rejects", out["rejects"],
                  "--weights", weights, "--image-size", int(image_size)])


def pca_features_uris(bucket: str, committed_batches: list[str], batch_id: str) -> list[str]:
    """Features of every committed batch plus this one (listed in the batch's pca_inputs.txt)."""
    return layout.pca_input_uris(bucket, committed_batches, batch_id)


def pca_step(*, code: dict[str, str], bucket: str, run_id: str, committed_batches: list[str], batch_id: str,
             pca_k: int | None, pca_variance: float) -> dict:
    out = pca_outputs(bucket, run_id)
    size = ["--k", int(pca_k)] if pca_k else ["--variance", float(pca_variance)]
    return spark_submit_step(
        name=f"fruits pca {layout.safe_run_id(run_id)}", app_name="fruits-pca", script=code["pca"],
        py_files=code["py_files"],
        # A list file written by plan_batch, not the URIs themselves: one step argument is capped
        # at 10,280 characters, which a few hundred committed batches would exceed.
        job_args=["--features-list", layout.s3_uri(bucket, layout.pca_inputs_key(batch_id)),
                  "--output", out["vectors"], "--model", out["model"], "--report", out["report"],
                  "--allow-empty", *size])


# ----------------------------------------------------------------------------- timings

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


# ----------------------------------------------------------------------------- IAM

def airflow_role_policy(*, bucket: str, region: str = DEFAULT_REGION, account_id: str = "123456789012",
                        service_role: str = "EMR_DefaultRole", job_flow_role: str = "EMR_EC2_DefaultRole") -> dict:
    """Least-privilege IAM policy of the role the Airflow workers and triggerer run with.

    Clusters can only be created in `region`, tagged project=fruits-pipeline, and only clusters
    carrying that tag can be driven or terminated. S3 access is limited to the pipeline's prefixes.
    """
    cluster_arn = f"arn:aws:elasticmapreduce:{region}:{account_id}:cluster/*"
    own_clusters = {"StringEquals": {"elasticmapreduce:ResourceTag/project": PROJECT_TAG}}
    objects = f"arn:aws:s3:::{bucket}/"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "CreateTaggedClustersInTheRegion", "Effect": "Allow",
             "Action": ["elasticmapreduce:RunJobFlow"], "Resource": "*",
             "Condition": {"StringEquals": {"aws:RequestTag/project": PROJECT_TAG,
                                            "aws:RequestedRegion": region}}},
            {"Sid": "TagClustersOnCreation", "Effect": "Allow",
             "Action": ["elasticmapreduce:AddTags"], "Resource": cluster_arn, "Condition": own_clusters},
            {"Sid": "DriveAndTerminateOwnClusters", "Effect": "Allow",
             "Action": ["elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeCluster",
                        "elasticmapreduce:DescribeStep", "elasticmapreduce:TerminateJobFlows"],
             "Resource": cluster_arn, "Condition": own_clusters},
            {"Sid": "PassServiceRoleToEmr", "Effect": "Allow", "Action": ["iam:PassRole"],
             "Resource": f"arn:aws:iam::{account_id}:role/{service_role}",
             "Condition": {"StringLike": {"iam:PassedToService": "elasticmapreduce.amazonaws.com*"}}},
            {"Sid": "PassInstanceRoleToEc2", "Effect": "Allow", "Action": ["iam:PassRole"],
             "Resource": f"arn:aws:iam::{account_id}:role/{job_flow_role}",
             "Condition": {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}}},
            {"Sid": "ListTheBucket", "Effect": "Allow",
             "Action": ["s3:GetBucketLocation", "s3:ListBucket"], "Resource": f"arn:aws:s3:::{bucket}"},
            {"Sid": "ReadPipelineObjects", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": [objects + p for p in ("batches/*", "features/*", "rejects/*", "pca/*", "state/*")]},
            {"Sid": "WritePipelineObjects", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": [objects + p for p in ("batches/*", "code/*", "reports/*", "state/*")]},
        ],
    }


def instance_role_s3_policy(*, bucket: str, landing_prefix: str = "landing/", log_prefix: str = "emr-logs/",
                            weights_prefix: str = "models/") -> dict:
    """S3 access the cluster nodes need (EMR_EC2_DefaultRole), instead of the managed policy's s3:*.

    Spark's overwrite mode deletes a dataset before writing it again, hence DeleteObject on outputs.
    """
    objects = f"arn:aws:s3:::{bucket}/"
    outputs = ("features/*", "rejects/*", "pca/*")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListTheBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Sid": "ReadInputsAndCode", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": [objects + p for p in (f"{landing_prefix}*", "batches/*", "code/*", f"{weights_prefix}*",
                                                *outputs)]},
            {"Sid": "WriteOutputs", "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
             "Resource": [objects + p for p in outputs]},
            {"Sid": "WriteClusterLogs", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": objects + f"{log_prefix}*"},
        ],
    }
