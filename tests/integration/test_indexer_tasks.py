"""The indexer's task bodies close every client they made, also when making the next one fails."""

from __future__ import annotations

import gc
import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from confluent_kafka import KafkaException, Producer

from include.catalog_publisher import airflow_clients, defaults, indexer_tasks
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, publish_products
from tests.helpers import read_messages


def librdkafka_threads() -> int:
    """Native threads of librdkafka clients alive in this process (each client runs several, named rdk:...)."""
    return sum(1 for task in Path("/proc/self/task").iterdir() if _thread_name(task).startswith("rdk:"))


def _thread_name(task: Path) -> str:
    """A thread's name; empty when it ended since /proc listed it (a client closing meanwhile)."""
    try:
        return (task / "comm").read_text()
    except FileNotFoundError:
        return ""


def connections_to(url: str) -> int:
    port = urlsplit(url).port
    established = [c for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED]
    return sum(1 for c in established if c.raddr and c.raddr.port == port)


def settle(count, expected: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (value := count()) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


@pytest.mark.fault(
    "the indexer's Kafka producer cannot be made (a setting librdkafka refuses for producers) after its consumer was",
    "the consumer and the Elasticsearch client are closed before the error propagates: no threads or sockets left",
)
def test_a_producer_that_cannot_be_made_leaves_no_consumer_behind(stack, topic, monkeypatch):
    # Valid for a consumer, refused for an idempotent producer: a real librdkafka configuration error.
    extra = {"bootstrap.servers": stack.kafka_bootstrap, "max.in.flight.requests.per.connection": 10}
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps({"conn_type": "kafka", "extra": extra}))
    gc.collect()
    before = settle(librdkafka_threads, librdkafka_threads())

    with pytest.raises(KafkaException, match="max.in.flight") as caught:
        indexer_tasks.index_from_kafka(topic, f"idx-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}", 100)

    # The traceback (held by `caught`) still references the task's frame: only close() can have stopped the consumer.
    assert caught.traceback is not None
    assert settle(librdkafka_threads, before) == before
    assert settle(lambda: connections_to(stack.elasticsearch_url), 0) == 0


def test_both_tasks_close_their_elasticsearch_client(stack, topic, tmp_path):
    products = [{"product_id": f"P{i}", "image_url": f"https://b/P{i}.jpg"} for i in range(3)]
    publish_products(Producer({"bootstrap.servers": stack.kafka_bootstrap, **PRODUCER_SETTINGS}), products, topic)
    index = f"idx-{uuid.uuid4().hex[:8]}"
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(products))

    indexed = indexer_tasks.index_from_kafka(topic, index, f"g-{uuid.uuid4().hex[:8]}", 100)
    assert indexed["indexed"] == 3
    assert settle(lambda: connections_to(stack.elasticsearch_url), 0) == 0
    verified = indexer_tasks.verify_index(index, str(catalog))
    assert verified["verified"] == 3
    assert settle(lambda: connections_to(stack.elasticsearch_url), 0) == 0
    assert os.path.exists(catalog)


def keep_the_producers(monkeypatch) -> list:
    """Every producer the indexer makes, the real one from the Airflow connection, kept referenced here: once
    the task returned, only its close() can have stopped the producer's threads (not the garbage collector)."""
    made = []
    real = airflow_clients.kafka_producer

    def keep(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(airflow_clients, "kafka_producer", keep)
    return made


def test_the_dead_letter_producer_is_closed_after_a_run_that_sent_dead_letters(stack, topic, monkeypatch):
    sender = Producer({"bootstrap.servers": stack.kafka_bootstrap, **PRODUCER_SETTINGS})
    sender.produce(topic, key=b"P1", value=b"not JSON: dead-lettered")
    assert sender.flush(30) == 0
    del sender
    gc.collect()
    before = settle(librdkafka_threads, librdkafka_threads())
    made = keep_the_producers(monkeypatch)

    indexed = indexer_tasks.index_from_kafka(topic, f"idx-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}", 100)

    assert indexed["dead_lettered"] == 1 and len(made) == 1
    assert settle(librdkafka_threads, before) == before  # the producer in `made` is closed, not just unreferenced
    (dead_letter,) = read_messages(stack.kafka_bootstrap, topic + defaults.DEAD_LETTER_SUFFIX)
    assert dead_letter.value() == b"not JSON: dead-lettered"  # confirmed before the producer was closed


@pytest.mark.fault(
    "the topic to index does not exist, found after the indexer's consumer and dead-letter producer were made",
    "the producer, the consumer and the Elasticsearch client are closed before the error propagates: "
    "no threads or sockets left",
)
def test_a_run_that_fails_after_making_its_producer_leaves_no_producer_behind(stack, monkeypatch):
    gc.collect()
    before = settle(librdkafka_threads, librdkafka_threads())
    made = keep_the_producers(monkeypatch)
    missing = f"missing-{uuid.uuid4().hex[:8]}"

    with pytest.raises(PublisherError, match=f"Kafka topic '{missing}' does not exist"):
        indexer_tasks.index_from_kafka(missing, f"idx-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}", 100)

    assert len(made) == 1
    assert settle(librdkafka_threads, before) == before
    assert settle(lambda: connections_to(stack.elasticsearch_url), 0) == 0
