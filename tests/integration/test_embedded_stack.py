"""The embedded stack keeps objects and Kafka topics across a stop and start, and stops cleanly."""

from __future__ import annotations

import os
import uuid

from confluent_kafka import Producer

from devstack.embedded_stack import EmbeddedStack, _alive
from tests.helpers import make_kafka_topic, read_topic, s3_client


def test_objects_and_messages_survive_a_restart_and_stop_leaves_nothing_running(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack", bucket="restart-bucket", topic="restart-topic")
    state = stack.start()
    try:
        s3_client(state).put_object(Bucket="restart-bucket", Key="k.jpg", Body=b"kept bytes")
        make_kafka_topic(state.kafka_bootstrap, "kept-topic", partitions=1)
        producer = Producer({"bootstrap.servers": state.kafka_bootstrap})
        producer.produce("kept-topic", key=b"PROD-1", value=b'{"product_id": "PROD-1"}')
        assert producer.flush(15) == 0
    finally:
        stack.stop()
    assert not any(_alive(pid) for pid in state.pids.values())
    assert stack.running() is None

    again = stack.start()
    try:
        assert set(again.pids.values()).isdisjoint(state.pids.values())  # really new processes
        assert s3_client(again).get_object(Bucket="restart-bucket", Key="k.jpg")["Body"].read() == b"kept bytes"
        assert read_topic(again.kafka_bootstrap, "kept-topic") == [("PROD-1", {"product_id": "PROD-1"})]
        assert "AIRFLOW_CONN_AWS_DEFAULT" in again.env() and again.env()["AWS_ENDPOINT_URL"] == again.s3_endpoint
    finally:
        stack.stop()


def test_start_is_idempotent_while_running(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")
    first = stack.start()
    try:
        assert stack.start() == first
        assert all(_alive(pid) for pid in first.pids.values())
    finally:
        stack.stop()
    assert not os.path.exists(stack.state_file)


def test_the_stack_takes_writes_into_many_fresh_buckets(stack):
    """Every bucket is a SeaweedFS collection with a volume of its own. With `weed mini`'s own slot count (free
    disk / 1 GiB: 36 on a 37 GB disk) the suite's ~35th bucket with data failed every write with 500 "no free
    volumes left", and the test that wrote it failed at random."""
    s3 = s3_client(stack)
    buckets = [f"many-{uuid.uuid4().hex[:12]}" for _ in range(60)]
    for name in buckets:
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="k.jpg", Body=b"bytes")
    s3.put_object(Bucket=buckets[-1], Key="big.jpg", Body=os.urandom(8 * 1024 * 1024))
    assert [s3.head_object(Bucket=name, Key="k.jpg")["ContentLength"] for name in buckets] == [5] * 60
    assert s3.head_object(Bucket=buckets[-1], Key="big.jpg")["ContentLength"] == 8 * 1024 * 1024
