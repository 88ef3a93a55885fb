"""Step 6: one confirmed Kafka message per product, against a real Tansu broker."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import Producer

from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, make_producer, publish_products
from tests.helpers import make_kafka_topic, read_topic, unused_port

PRODUCTS = [{"product_id": f"PROD-{i}", "name": f"Product {i} ü", "price": i * 1.5, "image_url": f"https://b/{i}.jpg"} for i in range(50)]


def producer(bootstrap):
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})


def test_every_product_is_one_message_keyed_by_its_id(stack, topic):
    outcome = publish_products(producer(stack.kafka_bootstrap), PRODUCTS, topic)
    assert outcome.delivered == len(PRODUCTS)
    messages = read_topic(stack.kafka_bootstrap, topic)
    assert sorted(messages, key=lambda m: int(m[0].split("-")[1])) == [(p["product_id"], p) for p in PRODUCTS]


def test_the_producer_is_idempotent_with_acks_all():
    assert PRODUCER_SETTINGS["enable.idempotence"] is True and PRODUCER_SETTINGS["acks"] == "all"


@pytest.mark.fault(
    "publishing to a topic that does not exist (broker auto-creation is off)",
    "the topic is created (3 partitions, compacted; PUBLISHER_TOPIC_* settings) and logged, then published to",
)
def test_a_missing_topic_is_created_then_published_to(stack, caplog):
    caplog.set_level(logging.INFO, logger="include.catalog_publisher.kafka_topics")
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    outcome = publish_products(make_producer({"bootstrap.servers": stack.kafka_bootstrap}), PRODUCTS, topic)
    assert outcome.delivered == len(PRODUCTS) and len(read_topic(stack.kafka_bootstrap, topic)) == len(PRODUCTS)
    assert f"created Kafka topic '{topic}'" in caplog.text and "cleanup.policy=compact" in caplog.text


@pytest.mark.fault("Kafka unreachable", "a service error naming the bootstrap servers (retried by Airflow)")
def test_an_unreachable_broker_is_a_service_error_naming_where(monkeypatch):
    monkeypatch.setattr("include.catalog_publisher.kafka_publish.METADATA_TIMEOUT_S", 3.0)
    where = f"127.0.0.1:{unused_port()}"
    with pytest.raises(ServiceUnavailableError, match=f"cannot reach Kafka at {where}.*KAFKA_BOOTSTRAP_SERVERS or the kafka_default connection"):
        publish_products(producer(where), PRODUCTS, "products", where=where)


@pytest.mark.fault("a catalog product without product_id or id, at publish", "the publish stops naming the product's position")
def test_a_product_without_id_stops_the_publish_with_its_position(stack, topic):
    products = [*PRODUCTS[:3], {"name": "no id"}, *PRODUCTS[3:]]
    with pytest.raises(PublisherError, match="product #4 has no 'product_id' or 'id'"):
        publish_products(producer(stack.kafka_bootstrap), products, topic)


@pytest.mark.fault("Kafka broker killed for good once publishing began", "the publish fails with the count Kafka confirmed (0 of N); nothing passes as sent")
def test_messages_the_broker_never_confirms_fail_the_publish_with_the_count(tmp_path):
    """A real broker, killed once publishing has begun: every unconfirmed message is counted, none passes as sent."""
    import os
    import signal

    from devstack.embedded_stack import EmbeddedStack

    stack = EmbeddedStack(tmp_path / "stack")
    state = stack.start()
    try:
        make_kafka_topic(state.kafka_bootstrap, "doomed")
        doomed = Producer({"bootstrap.servers": state.kafka_bootstrap, **PRODUCER_SETTINGS, "message.timeout.ms": 3000})

        def products_then_broker_dies():
            os.kill(state.pids["tansu"], signal.SIGKILL)  # after the topic check, before any message
            yield from PRODUCTS

        with pytest.raises(ServiceUnavailableError, match=rf"Kafka confirmed 0 of {len(PRODUCTS)} products on topic 'doomed'.*timed out"):
            publish_products(doomed, products_then_broker_dies(), "doomed", where=state.kafka_bootstrap)
    finally:
        stack.stop()
