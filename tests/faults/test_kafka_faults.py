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
    "Kafka broker killed during a publish (between produce requests) and restarted 2 s later",
    "the producer retries until the broker is back; every product on the topic once, none lost",
)
def test_a_broker_restart_during_publish_loses_no_product(own_stack):
    stack, state = own_stack
    topic = make_kafka_topic(state.kafka_bootstrap, f"restart-{uuid.uuid4().hex[:8]}")
    revived = threading.Event()
    producer = Producer({"bootstrap.servers": state.kafka_bootstrap, **PRODUCER_SETTINGS})

    def products_with_a_broker_restart():
        for i, product in enumerate(PRODUCTS):
            if i == 1000:  # mid-publish: the first 1,000 confirmed, the rest queue up and are retried
                # Killed with no produce request in flight: Tansu's S3 engine stores a produce as three writes
                # (producer sequence, watermark, batch object). A kill between them loses a batch that a
                # retry is then told is a duplicate, which a broker with a log (Kafka) cannot do.
                assert producer.flush(30) == 0
                stack.kill("tansu")
                threading.Timer(2, lambda: (stack.revive("tansu"), revived.set())).start()
            yield product

    outcome = publish_products(producer, products_with_a_broker_restart(), topic)
    assert revived.wait(60)
    assert outcome.delivered == len(PRODUCTS)

    keys = Counter(m.key().decode() for m in read_messages(state.kafka_bootstrap, topic, timeout=60))
    # None lost, none twice: the batches sent while the broker was down never reached it, and the ones it
    # confirmed before are kept with the producer's sequences, so no retry is stored again.
    assert keys == Counter(p["product_id"] for p in PRODUCTS)
