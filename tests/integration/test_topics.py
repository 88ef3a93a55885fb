"""Topics are created when missing, as a fresh broker (or the compose stack's Kafka, auto-creation off)
needs: the publisher's topic by the DAG and the runbook's producer, the dead-letter topic by the indexer."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from devstack import local_airflow
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.kafka_publish import make_producer, publish_products, release_producer
from include.catalog_publisher.kafka_topics import TopicSettings
from tests.helpers import KAFKA_PRODUCTS, read_topic


def describe(bootstrap: str, topic: str) -> tuple[int, dict[str, str]]:
    """(partitions, topic configuration) as the broker reports them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = len(admin.list_topics(topic, timeout=15).topics[topic].partitions)
    future = admin.describe_configs([ConfigResource("topic", topic)])
    configs = next(iter(future.values())).result(timeout=15)
    return partitions, {name: entry.value for name, entry in configs.items()}


def replicas(bootstrap: str, topic: str) -> list[int]:
    """How many replicas the broker reports for each partition of the topic."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=15)
    return [len(p.replicas) for _, p in sorted(metadata.topics[topic].partitions.items())]


def test_the_publisher_creates_its_topic_and_the_indexer_its_dead_letter_topic(published, stack, caplog):
    """The shared integration run publishes to a topic nobody created (tests/integration/conftest.py)."""
    run, topic = published["run"], published["topic"]
    assert run.succeeded, run.task_states
    partitions, config = describe(stack.kafka_bootstrap, topic)
    assert partitions == 3 and config["cleanup.policy"] == "compact"  # one message per product survives
    assert len(read_topic(stack.kafka_bootstrap, topic)) == run.result("publish_to_kafka")["published"]

    # Nothing but the indexer creates <topic>.dlq. An indexer test that ran first on this topic may have made
    # it: it goes, so that this run is the one that creates it (and says so once).
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    if topic + ".dlq" in admin.list_topics(timeout=15).topics:
        admin.delete_topics([topic + ".dlq"], request_timeout=15)[topic + ".dlq"].result(timeout=15)
    caplog.set_level(logging.INFO, logger="include.catalog_publisher.kafka_topics")
    index = f"topics-{uuid.uuid4().hex[:8]}"
    catalog = run.result("update_catalog")["catalog"]
    indexed = local_airflow.run_dag("index_product_catalog", {"topic": topic, "index": index, "catalog_file": catalog})
    assert indexed.succeeded, indexed.task_states
    created = [line for line in caplog.messages if line.startswith(f"created Kafka topic '{topic}.dlq'")]
    assert len(created) == 1 and "cleanup.policy=delete, retention.ms=2592000000" in created[0], caplog.messages
    # The retention it has is the one kafka_topics gives a dead-letter topic.
    partitions, config = describe(stack.kafka_bootstrap, topic + ".dlq")
    assert config["cleanup.policy"] == "delete" and config["retention.ms"] == str(30 * 24 * 3600 * 1000)


def test_the_replication_factor_setting_reaches_the_broker_even_above_the_number_of_brokers(stack, monkeypatch, caplog):
    """Tansu, the embedded stack's one broker, accepts any replication factor without an error (it reports itself
    that many times as the replicas), so the INVALID_REPLICATION_FACTOR error of kafka_topics, which Apache Kafka
    gives, cannot be provoked here. What can be seen is the setting reaching the broker: each partition reports
    as many replicas as asked for, and the log says which factor the topic was created with."""
    caplog.set_level(logging.INFO, logger="include.catalog_publisher.kafka_topics")
    brokers = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=15).brokers
    assert len(brokers) == 1

    unset = f"rf-{uuid.uuid4().hex[:8]}"
    producer = make_producer({"bootstrap.servers": stack.kafka_bootstrap})
    try:
        publish_products(producer, KAFKA_PRODUCTS[:3], unset)
        monkeypatch.setenv("PUBLISHER_TOPIC_REPLICATION_FACTOR", "3")
        above = f"rf-{uuid.uuid4().hex[:8]}"
        publish_products(producer, KAFKA_PRODUCTS[:3], above)
    finally:
        release_producer(producer)
    assert replicas(stack.kafka_bootstrap, unset) == [1, 1, 1]  # unset: the number of brokers, when fewer than 3
    assert replicas(stack.kafka_bootstrap, above) == [3, 3, 3]
    assert any(f"created Kafka topic '{above}'" in m and "replication factor 3" in m for m in caplog.messages)
    assert len(read_topic(stack.kafka_bootstrap, above)) == 3


def test_the_runbook_producer_creates_a_missing_topic_with_the_configured_settings(stack, tmp_path):
    catalog = tmp_path / "products_with_s3_urls.json"
    catalog.write_text(json.dumps([{"product_id": f"PROD-{i}", "image_url": f"https://b/{i}.jpg"} for i in range(5)]))
    topic = f"runbook-{uuid.uuid4().hex[:8]}"
    settings = {"PUBLISHER_TOPIC_PARTITIONS": "2", "PUBLISHER_TOPIC_RETENTION_MS": "86400000"}
    command = [
        sys.executable,
        str(project_root() / "scripts/kafka/product_producer.py"),
        "--products-file",
        str(catalog),
    ]
    command += ["--topic", topic]

    first = subprocess.run(command, env={**os.environ, **settings}, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"created Kafka topic '{topic}'" in first.stderr and "2 partitions" in first.stderr
    partitions, config = describe(stack.kafka_bootstrap, topic)
    assert partitions == 2 and config["retention.ms"] == "86400000" and config["cleanup.policy"] == "delete"

    again = subprocess.run(command, env={**os.environ, **settings}, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "created Kafka topic" not in again.stderr, again.stderr
    assert sorted(key for key, _ in read_topic(stack.kafka_bootstrap, topic)) == sorted(
        [f"PROD-{i}" for i in range(5)] * 2
    )


@pytest.mark.fault(
    "PUBLISHER_TOPIC_PARTITIONS or _REPLICATION_FACTOR not a whole number above 0",
    "one error naming the variable, before anything is created",
)
@pytest.mark.parametrize("value", ["three", "0"])
def test_a_bad_topic_setting_is_named(monkeypatch, value):
    monkeypatch.setenv("PUBLISHER_TOPIC_PARTITIONS", value)
    expected = rf"PUBLISHER_TOPIC_PARTITIONS='{value}' is not a whole number of at least 1; fix it or unset it"
    with pytest.raises(PublisherError, match=expected):
        TopicSettings.catalog()


def test_a_retention_that_is_not_a_whole_number_is_named(monkeypatch):
    monkeypatch.setenv("PUBLISHER_TOPIC_RETENTION_MS", "7 days")
    with pytest.raises(
        PublisherError,
        match=r"PUBLISHER_TOPIC_RETENTION_MS='7 days' is not a whole number of at least 1; fix it or unset it",
    ):
        TopicSettings.catalog()
