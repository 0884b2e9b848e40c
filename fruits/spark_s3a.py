"""Hadoop's S3A connector for Spark: which jars, where they are cached, and the settings that point
it at an S3 endpoint.

PyPI's pyspark ships Hadoop's client but not its S3 connector. `make venv` (and `make emr-stack`)
resolve `hadoop-aws` of the Hadoop version each pyspark ships, with the AWS SDK it was built
against, through Spark's own mechanism (`--packages`, Ivy) into a cache outside the checkout
(fruits_dev/spark_jars.py), and record the resolved jars; runs then name those jars
(`spark.jars`) and need no network. `s3://` is mapped to S3A, as EMR maps it to EMRFS, so the
jobs take the same URIs on a laptop and on a cluster.

Cheap to import (no pyspark, no boto3): the DAG's modules may read it.
"""

from __future__ import annotations

from pathlib import Path

from fruits import settings
from fruits.errors import PermanentError

# Spark version (major.minor) -> Maven coordinates resolved for it; the single place these are pinned.
#   4.2: pyspark 4.2.0 ships Hadoop 3.5.0, whose hadoop-aws needs the AWS SDK v2 bundle 2.35.4
#        (and pulls the S3 Analytics Accelerator and wildfly-openssl with it).
#   3.5: pyspark 3.5.x ships Hadoop 3.3.4, whose hadoop-aws needs the AWS SDK v1 bundle 1.12.262
#        (EMR 7 runs Spark 3.5; `make emr-stack`).
S3A_PACKAGES: dict[str, tuple[str, ...]] = {
    "4.2": ("org.apache.hadoop:hadoop-aws:3.5.0", "software.amazon.awssdk:bundle:2.35.4"),
    "3.5": ("org.apache.hadoop:hadoop-aws:3.3.4", "com.amazonaws:aws-java-sdk-bundle:1.12.262"),
}
S3A_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3AFileSystem"


class S3AJarsMissing(PermanentError, RuntimeError):
    """The S3A jars of a Spark version were never resolved on this machine."""


def spark_minor(version: str) -> str:
    """'3.5.6' -> '3.5'."""
    return ".".join(version.split(".")[:2])


def packages(spark_version: str) -> tuple[str, ...]:
    minor = spark_minor(spark_version)
    if minor not in S3A_PACKAGES:
        raise S3AJarsMissing(
            f"no S3A connector pinned for Spark {spark_version} "
            f"(fruits/spark_s3a.py knows {', '.join(sorted(S3A_PACKAGES))})"
        )
    return S3A_PACKAGES[minor]


def hadoop_version(spark_version: str) -> str:
    """The Hadoop version a pinned hadoop-aws belongs to (it must equal the one pyspark ships)."""
    return packages(spark_version)[0].rsplit(":", 1)[1]


def cache_dir() -> Path:
    """Ivy's cache and the resolved-jar lists: outside the checkout, shared by every clone."""
    return settings.spark_jars_cache_dir()


def jars_list_file(spark_version: str) -> Path:
    return cache_dir() / f"s3a-spark-{spark_minor(spark_version)}.jars"


def resolved_jars(spark_version: str) -> list[str]:
    """The local paths of the S3A jars resolved for `spark_version` (S3AJarsMissing when not installed)."""
    listing = jars_list_file(spark_version)
    wanted = packages(spark_version)
    if listing.is_file():
        lines = listing.read_text(encoding="utf-8").splitlines()
        header, jars = (lines[0], lines[1:]) if lines else ("", [])
        if header == "# " + " ".join(wanted) and jars and all(Path(jar).is_file() for jar in jars):
            return jars
    raise S3AJarsMissing(
        f"the S3A jars of Spark {spark_minor(spark_version)} are not installed "
        f"({', '.join(wanted)}): run `make venv` (or `make emr-stack` for EMR's Spark)"
    )


def write_jars_list(spark_version: str, jars: list[str]) -> Path:
    listing = jars_list_file(spark_version)
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(["# " + " ".join(packages(spark_version)), *jars]) + "\n", encoding="utf-8")
    return listing


def s3a_conf(
    *,
    endpoint_url: str | None,
    region: str,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
) -> dict[str, str]:
    """Spark settings for S3A on `endpoint_url` (None: AWS itself) with these credentials (None:
    the SDK's default chain, e.g. an instance role). `s3://` and `s3a://` both go through S3A."""
    hadoop = {
        "fs.s3.impl": S3A_FILESYSTEM,  # what EMR does with EMRFS: jobs keep their s3:// URIs
        "fs.s3a.impl": S3A_FILESYSTEM,
        "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "fs.s3a.endpoint.region": region,
        # Parquet writes and model-cache writes are small: no multipart for them, fewer requests.
        "fs.s3a.multipart.threshold": str(128 * 1024 * 1024),
    }
    if endpoint_url:
        hadoop["fs.s3a.endpoint"] = endpoint_url
        hadoop["fs.s3a.path.style.access"] = "true"  # an S3 server on loopback has no bucket host names
        hadoop["fs.s3a.connection.ssl.enabled"] = str(endpoint_url.startswith("https://")).lower()
    if access_key and secret_key:
        hadoop["fs.s3a.access.key"] = access_key
        hadoop["fs.s3a.secret.key"] = secret_key
        if session_token:
            hadoop["fs.s3a.session.token"] = session_token
            hadoop["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
        else:
            hadoop["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    return {f"spark.hadoop.{key}": value for key, value in hadoop.items()}


def s3a_for_connection(aws_conn_id: str | None, region: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Spark settings and spark-submit's environment for S3A, from the Airflow AWS connection the
    pipeline's tasks use: the same endpoint (an `endpoint_url` in its extra: MinIO, the embedded
    server), region and credentials, so a Spark job reads and writes the bucket the DAG sees.

    The credentials travel in the environment (AWS_ACCESS_KEY_ID...), which S3A's default
    credential chain reads, never in a `--conf` on the command line that logs and `ps` show.
    None (an instance role): nothing is set and the chain finds the role.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    credentials = hook.get_credentials()
    conf = s3a_conf(
        endpoint_url=hook.conn_config.get_service_endpoint_url("s3"),  # service_config's, else global
        region=region or hook.region_name or "us-east-1",
    )
    env = {}
    if credentials.access_key and credentials.secret_key:
        env = {"AWS_ACCESS_KEY_ID": credentials.access_key, "AWS_SECRET_ACCESS_KEY": credentials.secret_key}
        if credentials.token:
            env["AWS_SESSION_TOKEN"] = credentials.token
    return conf, env
