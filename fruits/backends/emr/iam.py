"""Least-privilege IAM policies generated from code (shown in docs/emr.md, checked by the tests
against the requests the pipeline really makes)."""

from __future__ import annotations

from fruits.backends.emr.cluster import PROJECT_TAG
from fruits.settings import DEFAULT_REGION


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
             "Resource": [objects + p for p in ("batches/*", "features/*", "rejects/*", "pca/*", "state/*",
                                                "classifier/*")]},
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
    outputs = ("features/*", "rejects/*", "pca/*", "classifier/*")
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
