"""The embedded S3 server's read counter (benchmarks/scale.py's `pca_input_bytes`): the body bytes
of object GETs it served while recording, ranged ones included, per key prefix; nothing else."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from fruits_dev import s3_reads, s3_server


def test_a_key_belongs_to_its_dataset_prefix():
    assert s3_reads.prefix_of("features/batch=b1/part-0.parquet") == "features/batch=b1/"
    assert s3_reads.prefix_of("pca/run=r/vectors/batch=b1/part-0.parquet") == "pca/run=r/"
    assert s3_reads.prefix_of("state/ledger.json") == "state/ledger.json"


def test_object_gets_are_counted_per_prefix_while_recording_only():
    reads = s3_reads.ObjectReads()
    with s3_server.embedded_endpoint(wrap=reads.wrap) as endpoint:
        s3 = s3_server.client(endpoint)
        s3_server.ensure_bucket(s3, "reads")
        s3.put_object(Bucket="reads", Key="features/batch=b1/part-0.parquet", Body=b"x" * 1000)
        s3.put_object(Bucket="reads", Key="pca/run=r/contents.bin", Body=b"y" * 160)
        s3.get_object(Bucket="reads", Key="pca/run=r/contents.bin")["Body"].read()  # before recording
        with reads.recording() as read:
            s3.get_object(Bucket="reads", Key="features/batch=b1/part-0.parquet")["Body"].read()
            s3.get_object(Bucket="reads", Key="features/batch=b1/part-0.parquet", Range="bytes=992-999")["Body"].read()
            s3.get_object(Bucket="reads", Key="pca/run=r/contents.bin")["Body"].read()
            s3.head_object(Bucket="reads", Key="pca/run=r/contents.bin")  # no body
            s3.list_objects_v2(Bucket="reads", Prefix="features/")  # a listing, not an object read
            with pytest.raises(ClientError):
                s3.get_object(Bucket="reads", Key="features/batch=b2/missing")  # an error body is not data
        s3.get_object(Bucket="reads", Key="pca/run=r/contents.bin")["Body"].read()  # after
    assert read == {"features/batch=b1/": {"requests": 2, "bytes": 1008}, "pca/run=r/": {"requests": 1, "bytes": 160}}
