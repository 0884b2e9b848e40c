"""Least-privilege IAM policies generated from code (shown in docs/emr.md, checked by the tests
against the requests the pipeline really makes). The bucket folders come from fruits.layout (and
code.py for code/ and wheelhouse/), so a new folder there cannot be forgotten here."""

from __future__ import annotations

from fruits import layout
from fruits.backends.emr import code
from fruits.backends.emr.cluster import PROJECT_TAG
from fruits.settings import DEFAULT_EMR_JOB_FLOW_ROLE, DEFAULT_REGION

_ANY = "x"  # a placeholder id: only the top folder of a key is used


def folder(key: str) -> str:
    """The top-level folder of a bucket key, with its slash: `features/batch=x/` -> `features/`."""
    return key.split("/", 1)[0] + "/"


BATCHES = folder(layout.manifest_key(_ANY))  # manifests, staged images, PCA input lists
FEATURES = folder(layout.features_prefix(_ANY))
REJECTS = folder(layout.rejects_prefix(_ANY))
PCA = folder(layout.pca_prefix(_ANY))
CLASSIFIER = folder(layout.classifier_prefix(_ANY))
REPORTS = folder(layout.report_key(_ANY))
STATE = folder(layout.LEDGER_KEY)
CODE = folder(code.code_prefix(_ANY))
WHEELHOUSE = folder(code.wheelhouse_prefix(_ANY))  # the wheels bootstrap.sh installs (no package index)
JOB_OUTPUTS = (FEATURES, REJECTS, PCA, CLASSIFIER)


def _objects(bucket: str, prefixes) -> list[str]:
    return [f"arn:aws:s3:::{bucket}/{prefix}*" for prefix in prefixes]


def airflow_role_policy(
    *,
    bucket: str,
    region: str = DEFAULT_REGION,
    account_id: str = "123456789012",
    service_role: str = "EMR_DefaultRole",
    job_flow_role: str = DEFAULT_EMR_JOB_FLOW_ROLE,
    landing_prefix: str = "landing/",
    log_prefix: str = "emr-logs/",
    queue_arn: str | None = None,
) -> dict:
    """Least-privilege IAM policy of the role the Airflow workers and triggerer run with.

    Clusters can only be created in `region`, tagged project=fruits-pipeline, and only clusters
    carrying that tag can be driven or terminated; the only instance role it can hand to a cluster
    is `job_flow_role` (the one of `instance_role_policy`). S3 access is limited to the pipeline's
    prefixes: planning copies landing objects into batches/ and deletes them once committed, and
    a failed step's sensor reads its logs under `log_prefix` (the clusters' LogUri; step_logs.py).
    With `queue_arn` (FRUITS_TRIGGER=sqs) the triggerer may also receive and delete the landing
    events of that queue (fruits.events).
    """
    from fruits import events

    cluster_arn = f"arn:aws:elasticmapreduce:{region}:{account_id}:cluster/*"
    own_clusters = {"StringEquals": {"elasticmapreduce:ResourceTag/project": PROJECT_TAG}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CreateTaggedClustersInTheRegion",
                "Effect": "Allow",
                "Action": ["elasticmapreduce:RunJobFlow"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestTag/project": PROJECT_TAG, "aws:RequestedRegion": region}},
            },
            {
                "Sid": "TagClustersOnCreation",
                "Effect": "Allow",
                "Action": ["elasticmapreduce:AddTags"],
                "Resource": cluster_arn,
                "Condition": own_clusters,
            },
            {
                "Sid": "DriveAndTerminateOwnClusters",
                "Effect": "Allow",
                "Action": [
                    "elasticmapreduce:AddJobFlowSteps",
                    "elasticmapreduce:DescribeCluster",
                    "elasticmapreduce:DescribeStep",
                    "elasticmapreduce:TerminateJobFlows",
                ],
                "Resource": cluster_arn,
                "Condition": own_clusters,
            },
            {
                "Sid": "PassServiceRoleToEmr",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": f"arn:aws:iam::{account_id}:role/{service_role}",
                "Condition": {"StringLike": {"iam:PassedToService": "elasticmapreduce.amazonaws.com*"}},
            },
            {
                "Sid": "PassOnlyThePipelineInstanceRoleToEc2",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": f"arn:aws:iam::{account_id}:role/{job_flow_role}",
                "Condition": {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}},
            },
            {
                "Sid": "ListTheBucket",
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "ReadPipelineObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _objects(
                    bucket,
                    (landing_prefix, BATCHES, FEATURES, REJECTS, PCA, STATE, CLASSIFIER, CODE, WHEELHOUSE, REPORTS),
                ),
            },
            {
                "Sid": "ReadFailedStepLogs",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _objects(bucket, (log_prefix,)),
            },
            {
                "Sid": "WritePipelineObjects",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": _objects(bucket, (BATCHES, CODE, WHEELHOUSE, REPORTS, STATE)),
            },
            {
                "Sid": "RemoveCommittedLandingObjects",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": _objects(bucket, (landing_prefix,)),
            },
            *(events.airflow_role_statements(queue_arn=queue_arn) if queue_arn else []),
        ],
    }


def instance_role_policy(*, bucket: str, log_prefix: str = "emr-logs/", weights_prefix: str = "models/") -> dict:
    """The whole S3 access of the cluster nodes' instance role (FRUITS_EMR_JOB_FLOW_ROLE), instead of
    EMR_EC2_DefaultRole's s3:* on every bucket: this bucket's prefixes only.

    The bootstrap reads the code and the wheelhouse; the jobs read the batch's staged copies under
    batches/ (never landing/), the code, the weights kept under `weights_prefix`, and earlier
    outputs (PCA reads every committed batch's features, the classifier a PCA run's vectors); they
    write their outputs (Spark's overwrite mode deletes a dataset before writing it again, hence
    DeleteObject) and EMR writes the cluster logs.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListTheBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Sid": "ReadBatchesCodeWeightsAndOutputs",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _objects(bucket, (BATCHES, CODE, WHEELHOUSE, weights_prefix, *JOB_OUTPUTS)),
            },
            {
                "Sid": "WriteJobOutputs",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": _objects(bucket, JOB_OUTPUTS),
            },
            {
                "Sid": "WriteClusterLogs",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": _objects(bucket, (log_prefix,)),
            },
            {
                "Sid": "KeepConvertedModels",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": _objects(bucket, (layout.MODEL_CACHE_PREFIX,)),
            },
        ],
    }


def instance_role_trust_policy() -> dict:
    """Who may assume the instance role: EC2 (the cluster nodes), nobody else."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
