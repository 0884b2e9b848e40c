"""The local EMR's reading of a step: the command line a node would run, its environment, its logs.

Running the steps for real is tests/integration/test_emr_runs.py's; here, what is derived from
the step and the cluster's Configurations, without Spark."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fruits import contract, plan, spark_s3a
from fruits.backends.emr import cluster as emr_cluster
from fruits.backends.emr import steps
from fruits_dev import local_emr
from fruits_dev.emr_stack import EmrStack

CODE = {"featurize": "s3://b/code/v1/featurize.py", "py_files": "s3://b/code/v1/fruits_spark.zip"}


@pytest.fixture
def emr(tmp_path, monkeypatch):
    monkeypatch.setattr(spark_s3a, "resolved_jars", lambda version: ["/cache/hadoop-aws.jar", "/cache/bundle.jar"])
    return local_emr.LocalEmr(
        s3=None,
        endpoint_url="http://127.0.0.1:5000",
        bucket="b",
        stack=EmrStack(tmp_path / "emr-stack"),
        work_dir=tmp_path / "work",
        region="eu-west-3",
    )


def featurize_step() -> dict:
    batch = contract.Batch(bucket="b", batch_id="b1", images=3, committed_batches=[], committed_features_rows=0)
    return steps.job_step(plan.featurize_job(batch, weights="none", image_size=32), CODE)


def a_cluster():
    return SimpleNamespace(configurations=emr_cluster.spark_configurations(), log_uri="s3://b/emr-logs/", id="j-1")


def test_the_step_is_read_as_spark_submit_reads_it():
    submit = local_emr.SparkSubmit.parse(featurize_step()["HadoopJarStep"]["Args"])
    assert submit.script == CODE["featurize"]
    assert submit.option("--deploy-mode") == "cluster" and submit.option("--py-files") == CODE["py_files"]
    assert submit.job_args[:2] == ["--manifest", "s3://b/batches/b1/manifest.jsonl"]
    flagged = local_emr.SparkSubmit.parse(["spark-submit", "--verbose", "--name", "x", "s3://b/job.py", "--k", "3"])
    assert flagged.options == [("--verbose", None), ("--name", "x")] and flagged.job_args == ["--k", "3"]
    with pytest.raises(ValueError, match="not a spark-submit step"):
        local_emr.SparkSubmit.parse(["hadoop-streaming", "x"])
    with pytest.raises(ValueError, match="without an application"):
        local_emr.SparkSubmit.parse(["spark-submit", "--name", "x"])


def test_the_node_runs_the_fetched_code_on_executor_jvms_with_the_clusters_configuration(emr, tmp_path):
    submit = local_emr.SparkSubmit.parse(featurize_step()["HadoopJarStep"]["Args"])
    script, zipped = tmp_path / "featurize.py", tmp_path / "fruits_spark.zip"
    command = emr.command(a_cluster(), submit, script, [zipped])
    assert command[0] == str(emr.stack.spark_submit)
    assert command[command.index("--master") + 1] == "local-cluster[2,1,1024]"  # two executor JVMs
    assert command[command.index("--deploy-mode") + 1] == "client" and command.count("--deploy-mode") == 1
    assert command[command.index("--py-files") + 1] == str(zipped) and CODE["py_files"] not in command
    assert command[command.index("--name") + 1] == "fruits-featurize"
    conf = dict(c.split("=", 1) for c in command[1::1] if "=" in c and c.startswith("spark."))
    python = str(emr.stack.root / "bin" / "python3")  # /opt/fruits/venv is played by EMR's stack
    assert conf["spark.pyspark.python"] == python and conf["spark.executorEnv.PYSPARK_PYTHON"] == python
    assert conf["spark.hadoop.fs.s3.impl"] == spark_s3a.S3A_FILESYSTEM
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:5000"
    assert conf["spark.jars"] == "/cache/hadoop-aws.jar,/cache/bundle.jar"
    assert command[-len(submit.job_args) - 1 :] == [str(script), *submit.job_args]


def test_spark_env_exports_reach_the_process_and_the_callers_spark_settings_do_not(emr, monkeypatch):
    monkeypatch.setenv("PYSPARK_PYTHON", "/elsewhere/python")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://elsewhere")
    env = emr.environment(a_cluster())
    assert env["PYSPARK_PYTHON"] == str(emr.stack.root / "bin" / "python3")
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["SPARK_HOME"] == str(emr.stack.spark_home)
    assert "AWS_ENDPOINT_URL" not in env
    assert env["PATH"].startswith(str(Path(emr.stack.root) / "bin"))


def test_a_failed_application_is_reported_as_yarns_client_reports_it():
    failed = local_emr._yarn_client_log("application_1_0001", 2)
    assert "final status: FAILED" in failed and "User application exited with status 2" in failed
    assert failed.rstrip().endswith("Application application_1_0001 finished with failed status")
    assert "final status: SUCCEEDED" in local_emr._yarn_client_log("application_1_0002", 0)


def test_a_step_whose_code_is_not_in_s3_fails_as_emr_reports_it(tmp_path, aws_credentials):
    """Nothing from the checkout: a script missing in S3 is a FAILED step with EMR's FailureDetails,
    its spark-submit log under the LogUri, and no driver run at all."""
    import gzip

    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-3")
        s3.create_bucket(Bucket="fruits-b", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        emr_client = boto3.client("emr", region_name="eu-west-3")
        cluster_id = emr_client.run_job_flow(
            Name="t",
            ReleaseLabel="emr-7.13.0",
            LogUri="s3://fruits-b/emr-logs/",
            Instances={
                "KeepJobFlowAliveWhenNoSteps": True,
                "InstanceGroups": [{"InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1}],
            },
            JobFlowRole="r",
            ServiceRole="s",
        )["JobFlowId"]
        step_request = featurize_step()  # its code URIs name bucket "b": nothing there
        [step_id] = emr_client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step_request])["StepIds"]
        emr = local_emr.LocalEmr(
            s3=s3,
            endpoint_url="http://unused",
            bucket="fruits-b",
            stack=EmrStack(tmp_path / "stack"),
            work_dir=tmp_path / "work",
            region="eu-west-3",
        )
        [cluster] = [c for c in local_emr.all_clusters() if c.id == cluster_id]
        assert emr.owns(cluster)
        emr._execute(cluster, cluster.steps[0])
        step = emr_client.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
        assert step["Status"]["State"] == "FAILED"
        details = step["Status"]["FailureDetails"]
        assert details["LogFile"] == f"s3://fruits-b/emr-logs/{cluster_id}/steps/{step_id}/stderr.gz"
        assert f"File {CODE['featurize']} does not exist" in details["Message"]
        log = gzip.decompress(
            s3.get_object(Bucket="fruits-b", Key=f"emr-logs/{cluster_id}/steps/{step_id}/stderr.gz")["Body"].read()
        ).decode()
        assert "java.io.FileNotFoundException" in log
        [executed] = emr.executed
        assert (executed.state, executed.exit_code, executed.application_id) == ("FAILED", 1, None)
        assert emr_client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "WAITING"
