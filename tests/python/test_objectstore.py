"""scripts/objectstore: the local S3 and SQS (moto) the VPC tests and the demo use.

Checked with an independent client (boto3): `start` is idempotent and prints the endpoint last,
`status` tells, and an object created in a bucket with a queue notification arrives on the queue
as an S3 event with a URL-encoded key (after the s3:TestEvent), the way the ingester reads it.
"""
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import unquote_plus

import boto3

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "objectstore"


def objectstore(*args):
    return subprocess.run([str(SCRIPT), *args], check=True, capture_output=True, text=True)


def clients(endpoint):
    env = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    return boto3.client("s3", endpoint_url=endpoint, **env), boto3.client("sqs", endpoint_url=endpoint, **env)


def test_start_is_idempotent_and_prints_the_endpoint():
    first = objectstore("start").stdout.strip().splitlines()[-1]
    t = time.monotonic()
    second = objectstore("start").stdout.strip().splitlines()[-1]
    assert first == second and first.startswith("http://127.0.0.1:")
    assert time.monotonic() - t < 5, "start is fast when running"
    assert "running" in objectstore("status").stdout


def test_notifications_reach_the_queue():
    endpoint = objectstore("start").stdout.strip().splitlines()[-1]
    s3, sqs = clients(endpoint)
    name = f"py-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    key = "AWSLogs/1/vpcflowlogs/a b+c.log.gz"
    etag = s3.put_object(Bucket=name, Key=key, Body=b"x")["ETag"].strip('"')
    bodies = []
    for _ in range(10):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        bodies += [json.loads(m["Body"]) for m in got]
        if len(bodies) >= 2:
            break
    assert bodies[0]["Event"] == "s3:TestEvent"
    record = bodies[1]["Records"][0]
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["object"]["key"] != key, "keys arrive URL-encoded"
    assert unquote_plus(record["s3"]["object"]["key"]) == key
    assert record["s3"]["object"]["eTag"] == etag
