"""S3A for Spark: the pinned jars, their recorded resolution, and the settings for an endpoint."""

from __future__ import annotations

import pytest

from fruits import spark_s3a


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUITS_SPARK_JARS_CACHE", str(tmp_path / "ivy"))
    return tmp_path / "ivy"


def test_each_spark_gets_the_hadoop_aws_of_the_hadoop_it_ships():
    assert spark_s3a.hadoop_version("4.2.0") == "3.5.0"
    assert spark_s3a.hadoop_version("3.5.6") == "3.3.4"  # EMR 7's Spark
    assert "com.amazonaws:aws-java-sdk-bundle:1.12.262" in spark_s3a.packages("3.5.1")
    with pytest.raises(spark_s3a.S3AJarsMissing, match="no S3A connector pinned for Spark 3.4"):
        spark_s3a.packages("3.4.1")


def test_recorded_jars_are_used_only_when_they_match_the_pins_and_exist(cache):
    with pytest.raises(spark_s3a.S3AJarsMissing, match="make venv"):
        spark_s3a.resolved_jars("4.2.0")
    jars = [cache / "jars" / "hadoop-aws.jar", cache / "jars" / "bundle.jar"]
    jars[0].parent.mkdir(parents=True)
    for jar in jars:
        jar.write_bytes(b"PK")
    listing = spark_s3a.write_jars_list("4.2.0", [str(j) for j in jars])
    assert listing.parent == cache
    assert spark_s3a.resolved_jars("4.2.1") == [str(j) for j in jars]
    with pytest.raises(spark_s3a.S3AJarsMissing):  # another Spark's pins: not these jars
        spark_s3a.resolved_jars("3.5.6")
    jars[1].unlink()
    with pytest.raises(spark_s3a.S3AJarsMissing):  # a jar gone from the cache
        spark_s3a.resolved_jars("4.2.0")
    spark_s3a.write_jars_list("4.2.0", [str(jars[0])])
    listing.write_text(listing.read_text().replace("3.5.0", "3.4.9"))  # pins changed since the resolution
    with pytest.raises(spark_s3a.S3AJarsMissing):
        spark_s3a.resolved_jars("4.2.0")


def test_s3_and_s3a_go_through_s3a_on_the_endpoint_with_the_given_credentials():
    conf = spark_s3a.s3a_conf(endpoint_url="http://127.0.0.1:9000", region="eu-west-3", access_key="k", secret_key="s")
    assert conf["spark.hadoop.fs.s3.impl"] == conf["spark.hadoop.fs.s3a.impl"] == spark_s3a.S3A_FILESYSTEM
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-3"
    assert (conf["spark.hadoop.fs.s3a.access.key"], conf["spark.hadoop.fs.s3a.secret.key"]) == ("k", "s")
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("SimpleAWSCredentialsProvider")
    temporary = spark_s3a.s3a_conf(
        endpoint_url=None, region="eu-west-1", access_key="k", secret_key="s", session_token="t"
    )
    assert temporary["spark.hadoop.fs.s3a.session.token"] == "t"
    assert temporary["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("TemporaryAWSCredentialsProvider")
    assert "spark.hadoop.fs.s3a.endpoint" not in temporary  # AWS itself
    role = spark_s3a.s3a_conf(endpoint_url="https://s3.example", region="eu-west-1")
    assert not [k for k in role if "key" in k or "credentials" in k]  # the SDK's default chain (an instance role)
    assert role["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_spark_reaches_the_bucket_through_the_dags_own_aws_connection(fruits_s3_connection):
    conf, env = spark_s3a.s3a_for_connection(fruits_s3_connection)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-3"
    # the credentials go to spark-submit's environment (S3A's default chain), never on its command line
    assert env == {"AWS_ACCESS_KEY_ID": "AKIDCONN", "AWS_SECRET_ACCESS_KEY": "conn-secret"}
    assert not [v for v in conf.values() if "conn-secret" in v or "AKIDCONN" in v]
