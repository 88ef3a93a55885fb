"""Kafka faults, produced for real: the broker (Tansu) killed during a publish and restarted."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer

from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, publish_products
from tests.helpers import make_kafka_topic, read_messages

PRODUCTS = [
    {"product_id": f"PROD-{i:05d}", "name": f"Product {i}", "image_url": f"https://b/{i}.jpg"} for i in range(5000)
]


@pytest.mark.fault(
    "Kafka broker killed during a publish and restarted 2 s later",
    "the producer retries until the broker is back; every product on the topic, none lost",
)
def test_a_broker_restart_during_publish_loses_no_product(own_stack):
    stack, state = own_stack
    topic = make_kafka_topic(state.kafka_bootstrap, f"restart-{uuid.uuid4().hex[:8]}")
    revived = threading.Event()

    def products_with_a_broker_restart():
        for i, product in enumerate(PRODUCTS):
            if i == 1000:  # mid-publish: earlier messages are in flight or confirmed, later ones queue up
                stack.kill("tansu")
                threading.Timer(2, lambda: (stack.revive("tansu"), revived.set())).start()
            yield product

    outcome = publish_products(
        Producer({"bootstrap.servers": state.kafka_bootstrap, **PRODUCER_SETTINGS}),
        products_with_a_broker_restart(),
        topic,
    )
    assert revived.wait(60)
    assert outcome.delivered == len(PRODUCTS)

    keys = Counter(m.key().decode() for m in read_messages(state.kafka_bootstrap, topic, timeout=60))
    assert set(keys) == {p["product_id"] for p in PRODUCTS}  # none lost
    # Idempotence is per broker session: a restarted broker that lost the producer's sequence state
    # may store a retried batch twice. The indexer keys documents by product id, so a duplicate
    # message is a repeated index of the same document, never a second document.
    duplicates = sum(n - 1 for n in keys.values())
    assert duplicates <= 1000, f"{duplicates} duplicate messages"
