"""Publishing to a real Tansu broker: one message per product, a missing topic created, a broker killed mid-publish."""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import Producer

from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, make_producer, publish_products
from tests.helpers import KAFKA_PRODUCTS as PRODUCTS
from tests.helpers import kafka_producer as producer
from tests.helpers import make_kafka_topic, read_topic


def test_every_product_is_one_message_keyed_by_its_id(stack, topic):
    outcome = publish_products(producer(stack.kafka_bootstrap), PRODUCTS, topic)
    assert outcome.delivered == len(PRODUCTS)
    messages = read_topic(stack.kafka_bootstrap, topic)
    assert sorted(messages, key=lambda m: int(m[0].split("-")[1])) == [(p["product_id"], p) for p in PRODUCTS]


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


@pytest.mark.fault(
    "a catalog product without product_id or id, at publish", "the publish stops naming the product's position"
)
def test_a_product_without_id_stops_the_publish_with_its_position(stack, topic):
    products = [*PRODUCTS[:3], {"name": "no id"}, *PRODUCTS[3:]]
    with pytest.raises(PublisherError, match="product #4 has no 'product_id' or 'id'"):
        publish_products(producer(stack.kafka_bootstrap), products, topic)


@pytest.mark.fault(
    "Kafka broker killed for good once publishing began",
    "the publish fails with the count Kafka confirmed (0 of N); nothing passes as sent",
)
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

        with pytest.raises(
            ServiceUnavailableError,
            match=rf"Kafka confirmed 0 of {len(PRODUCTS)} products on topic 'doomed'.*timed out",
        ):
            publish_products(doomed, products_then_broker_dies(), "doomed", where=state.kafka_bootstrap)
    finally:
        stack.stop()
