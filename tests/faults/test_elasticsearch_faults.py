"""Elasticsearch rejecting items, produced for real: a proxy in front of the engine answers the first
bulk request the way a saturated cluster does (every item 429 es_rejected_execution_exception), and
the catalog holds a document the index mapping refuses."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from include.catalog_publisher import env_clients
from include.catalog_publisher.indexer import CONSUMER_SETTINGS, DeadLetters, index_messages
from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, publish_products
from tests.helpers import fault_proxy, make_kafka_topic, read_messages

PRODUCTS = [
    {"product_id": f"PROD-{i:03d}", "name": f"Product {i}", "price": i + 0.5, "image_url": f"https://b/{i}.jpg"}
    for i in range(40)
]


def reject_the_first_bulk():
    """A fault answering the first _bulk with 429 for every item (nothing indexed), then forwarding."""
    seen = {"bulks": 0}
    lock = threading.Lock()

    def fault(method: str, path: str, headers: dict[str, str], body: bytes | None):
        if method not in ("POST", "PUT") or "_bulk" not in path:
            return None
        with lock:
            seen["bulks"] += 1
            if seen["bulks"] > 1:
                return None
        actions = [json.loads(line) for line in body.splitlines()[0::2]]
        items = [
            {
                op: {
                    "_id": meta.get("_id"),
                    "status": 429,
                    "error": {
                        "type": "es_rejected_execution_exception",
                        "reason": "rejected execution (queue capacity 200)",
                    },
                }
            }
            for action in actions
            for op, meta in action.items()
        ]
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"took": 1, "errors": True, "items": items}).encode(),
        )

    return fault, seen


@pytest.mark.fault(
    "Elasticsearch rejecting bulk items: every item of a bulk answered 429, and a document the mapping refuses (400)",
    "429 items retried with backoff until indexed; the refused document goes to <topic>.dlq with its error; "
    "both counted in the outcome; offsets committed after",
)
def test_rejected_items_are_retried_and_refused_ones_dead_lettered_and_reported(stack):
    topic = make_kafka_topic(stack.kafka_bootstrap, f"rejects-{uuid.uuid4().hex[:8]}")
    dlq = make_kafka_topic(stack.kafka_bootstrap, topic + ".dlq")
    index = f"rejects-{uuid.uuid4().hex[:8]}"
    bad = {"product_id": "PROD-BAD", "price": "not a number"}
    publish_products(
        Producer({"bootstrap.servers": stack.kafka_bootstrap, **PRODUCER_SETTINGS}), [*PRODUCTS, bad], topic
    )

    fault, seen = reject_the_first_bulk()
    with fault_proxy(stack.elasticsearch_url, fault) as url:
        es = env_clients.elasticsearch(url)
        consumer = Consumer(
            {"bootstrap.servers": stack.kafka_bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}", **CONSUMER_SETTINGS}
        )
        outcome = index_messages(
            consumer,
            es,
            topic,
            index,
            DeadLetters(Producer({"bootstrap.servers": stack.kafka_bootstrap, **PRODUCER_SETTINGS}), dlq),
        )
        committed = consumer.committed(consumer.assignment(), timeout=10)
        consumer.close()

    assert seen["bulks"] >= 2
    assert outcome.retried_items == len(PRODUCTS) + 1  # the whole first bulk, once
    assert (outcome.indexed, outcome.dead_lettered) == (len(PRODUCTS), 1)
    assert es.count(index=index)["count"] == len(PRODUCTS)
    dead = {m.key().decode(): dict(m.headers()) for m in read_messages(stack.kafka_bootstrap, dlq)}
    assert list(dead) == ["PROD-BAD"] and dead["PROD-BAD"]["error"].decode().startswith(
        "Elasticsearch refused the document (400"
    )
    assert sum(tp.offset for tp in committed) == len(PRODUCTS) + 1  # every message accounted for, then committed
