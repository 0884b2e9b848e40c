"""Event-driven start on AWS: S3 event notifications on the landing prefix go to an SQS queue,
which an AssetWatcher in the triggerer receives; each message batch is an event of the
`fruits_landing` Asset, on which fruits_pipeline is scheduled when FRUITS_TRIGGER=sqs.

Polling (FRUITS_SCHEDULE + the reschedule sensor) stays the default: MinIO cannot publish to SQS.
The documents AWS needs (bucket notification, queue policy, the Airflow role's SQS statements)
are generated here, shown in docs/events.md and checked against it by the tests; `configure`
applies the first two to a bucket and queue (the dev stack's moto server, or AWS).

Top level: standard library only, so the DAG file stays cheap to parse in both modes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

TRIGGERS = ("poll", "sqs")
NOTIFICATION_ID = "fruits-landing-to-sqs"
LANDING_EVENTS = ["s3:ObjectCreated:*"]  # PUT, POST, COPY and multipart uploads; deletions are not news
WATCHER_NAME = "fruits_landing_sqs"
LONG_POLL_SECONDS = 20  # SQS's maximum ReceiveMessage wait: a message is received as soon as it lands
MAX_MESSAGES = 10  # SQS's maximum per ReceiveMessage: fewer receives (and asset events) per upload burst

_AWS_QUEUE_HOST = re.compile(r"^sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_QUEUE_PATH = re.compile(r"^/([0-9]{12})/([A-Za-z0-9_-]{1,80}(\.fifo)?)$")


@dataclass(frozen=True)
class Queue:
    """An SQS queue named by its URL; `region` is None for non-AWS endpoints (moto, ElasticMQ)."""

    url: str
    account_id: str
    name: str
    region: str | None

    @property
    def arn(self) -> str:
        if not self.region:
            raise ValueError(f"the region of {self.url} is not in its URL: pass it explicitly")
        return f"arn:aws:sqs:{self.region}:{self.account_id}:{self.name}"


def parse_queue_url(url: str, region: str | None = None) -> Queue:
    """Check an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>, or any host with
    that path) and take it apart. S3 cannot notify FIFO queues, so those are refused here."""
    parts = urlsplit(url.strip())
    path = _QUEUE_PATH.match(parts.path)
    if parts.scheme not in ("http", "https") or not parts.hostname or not path:
        raise ValueError(
            f"FRUITS_SQS_QUEUE_URL must be an SQS queue URL such as "
            f"https://sqs.eu-west-3.amazonaws.com/123456789012/fruits-landing, got {url!r}"
        )
    account_id, name, fifo = path.groups()
    if fifo:
        raise ValueError(
            f"FRUITS_SQS_QUEUE_URL names a FIFO queue ({name}): S3 event notifications "
            f"can only be sent to standard queues"
        )
    host = _AWS_QUEUE_HOST.match(parts.hostname)
    return Queue(url=url.strip(), account_id=account_id, name=name, region=region or (host.group(1) if host else None))


# ------------------------------------------------------------------------------ AWS documents


def bucket_notification(*, queue_arn: str, landing_prefix: str) -> dict:
    """PutBucketNotificationConfiguration body: objects created under the landing prefix -> the queue."""
    return {
        "QueueConfigurations": [
            {
                "Id": NOTIFICATION_ID,
                "QueueArn": queue_arn,
                "Events": list(LANDING_EVENTS),
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": landing_prefix}]}},
            }
        ]
    }


def queue_policy(*, queue_arn: str, bucket: str, bucket_account_id: str) -> dict:
    """The queue's access policy: only S3, on behalf of this bucket of this account, may send to it
    (aws:SourceAccount guards against a bucket of the same name re-created in another account)."""
    return {
        "Version": "2012-10-17",
        "Id": "fruits-landing-events",
        "Statement": [
            {
                "Sid": "S3SendsLandingEvents",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                    "StringEquals": {"aws:SourceAccount": bucket_account_id},
                },
            }
        ],
    }


def airflow_role_statements(*, queue_arn: str) -> list[dict]:
    """What the triggerer's role needs on the queue (DeleteMessageBatch is authorised as
    sqs:DeleteMessage). To be appended to the Statement list of the Airflow role's policy."""
    return [
        {
            "Sid": "ReceiveLandingEvents",
            "Effect": "Allow",
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            "Resource": queue_arn,
        }
    ]


# ------------------------------------------------------------------------------ Airflow side


def landing_trigger(settings):
    """The triggerer's poller: MessageQueueTrigger(scheme="sqs") dispatches to the Amazon provider's
    SqsSensorTrigger, which long-polls, deletes what it received and yields one event per batch."""
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    queue = parse_queue_url(settings.sqs_queue_url)
    return MessageQueueTrigger(
        scheme="sqs",
        sqs_queue=queue.url,
        aws_conn_id=settings.aws_conn_id,
        region_name=queue.region,
        max_messages=MAX_MESSAGES,
        wait_time_seconds=LONG_POLL_SECONDS,
        waiter_delay=settings.sqs_poll_seconds,  # the pause between two receives that found nothing
    )


def schedule(settings):
    """fruits_pipeline's `schedule=`: FRUITS_SCHEDULE when polling; the watched landing Asset with sqs."""
    if settings.trigger != "sqs":
        return settings.schedule
    from airflow.sdk import AssetWatcher

    from fruits import assets

    return [assets.landing(AssetWatcher(name=WATCHER_NAME, trigger=landing_trigger(settings)))]


def landed_keys(asset_event_extra: dict) -> list[str]:
    """The object keys an asset event's S3 messages carry (URL-decoded; S3 test events skipped)."""
    from urllib.parse import unquote_plus

    keys = []
    for message in (asset_event_extra.get("payload") or {}).get("message_batch", []):
        body = json.loads(message["Body"])
        keys += [unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", []) if "s3" in r]
    return keys


# ------------------------------------------------------------------------------ what it saves


def monthly_start_requests(*, poke_interval: int, sqs_poll_seconds: int, images: int, days: int = 30) -> dict:
    """Requests a month spent on noticing new images, polling against events (docs/events.md, "Cost").

    Polling: every poke of the always-waiting sensor (FRUITS_SCHEDULE @hourly, sensor_timeout one hour)
    is a task try on a worker and at least one S3 LIST. Events: the triggerer's idle receives (a long
    poll, then the pause), plus per image one SendMessage (S3 to SQS) and its share of the batched
    ReceiveMessage and DeleteMessageBatch (MAX_MESSAGES per call when images come in bursts)."""
    seconds = days * 86400
    pokes = seconds // poke_interval
    return {
        "poll_sensor_tries": pokes,
        "poll_list_requests": pokes,
        "sqs_idle_receives": seconds // (LONG_POLL_SECONDS + sqs_poll_seconds),
        "sqs_image_requests": images + 2 * -(-images // MAX_MESSAGES),
    }


# ------------------------------------------------------------------------------ applying them


def configure(s3, sqs, *, bucket: str, queue_url: str, landing_prefix: str, drain_seconds: float = 5) -> dict:
    """Set the queue policy and the bucket notification (boto3 clients), keeping the bucket's other
    notifications. S3 then sends an s3:TestEvent message, which would start an empty run: it is
    received and deleted here (other messages are made visible again). Returns the configuration."""
    import time

    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    account_id = queue_arn.split(":")[4]
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "Policy": json.dumps(queue_policy(queue_arn=queue_arn, bucket=bucket, bucket_account_id=account_id))
        },
    )
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    ours = bucket_notification(queue_arn=queue_arn, landing_prefix=landing_prefix)
    current["QueueConfigurations"] = [
        c for c in current.get("QueueConfigurations", []) if c.get("Id") != NOTIFICATION_ID
    ] + ours["QueueConfigurations"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
    deadline = time.monotonic() + drain_seconds
    while time.monotonic() < deadline:
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=MAX_MESSAGES, WaitTimeSeconds=1)
        for message in received.get("Messages", []):
            if json.loads(message["Body"]).get("Event") == "s3:TestEvent":
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return current
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return current


def documents(
    *, bucket: str, queue_url: str, landing_prefix: str = "landing/", bucket_account_id: str | None = None
) -> dict:
    """The three documents for a bucket and an AWS queue URL (what docs/events.md shows)."""
    queue = parse_queue_url(queue_url)
    return {
        "bucket-notification": bucket_notification(queue_arn=queue.arn, landing_prefix=landing_prefix),
        "queue-policy": queue_policy(
            queue_arn=queue.arn, bucket=bucket, bucket_account_id=bucket_account_id or queue.account_id
        ),
        "airflow-role-statements": airflow_role_statements(queue_arn=queue.arn),
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fruits.events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--queue-url", required=True, help="https://sqs.<region>.amazonaws.com/<account>/<name>")
    parser.add_argument("--landing-prefix", default="landing/")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="set the queue policy and the bucket notification with the default AWS credentials",
    )
    args = parser.parse_args(argv)
    docs = documents(bucket=args.bucket, queue_url=args.queue_url, landing_prefix=args.landing_prefix)
    print(json.dumps(docs, indent=2))
    if args.apply:
        import boto3

        region = parse_queue_url(args.queue_url).region
        configure(
            boto3.client("s3", region_name=region),
            boto3.client("sqs", region_name=region),
            bucket=args.bucket,
            queue_url=args.queue_url,
            landing_prefix=args.landing_prefix,
        )
        print(f"configured: s3://{args.bucket}/{args.landing_prefix} -> {args.queue_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
