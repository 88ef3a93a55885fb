"""Step 7: Kafka -> Elasticsearch indexing against real Tansu and the embedded Elasticsearch-API engine."""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from include.catalog_publisher import env_clients
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.indexer import (
    CONSUMER_SETTINGS,
    INDEX_MAPPING,
    DeadLetters,
    index_messages,
    verify_catalog_indexed,
)
from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, publish_products
from tests.helpers import elasticsearch_answering_502, make_kafka_topic, read_messages, read_topic

PRODUCTS = [
    {"product_id": f"PROD-{i:03d}", "name": f"Lamp {i}", "price": float(i), "image_url": f"https://cdn/{i}.jpg"}
    for i in range(40)
]


@pytest.fixture
def es(stack):
    return env_clients.elasticsearch(stack.elasticsearch_url)


@pytest.fixture
def topics(stack):
    name = f"idx-{uuid.uuid4().hex[:10]}"
    make_kafka_topic(stack.kafka_bootstrap, name)
    make_kafka_topic(stack.kafka_bootstrap, name + ".dlq")
    return name, name + ".dlq"


def producer(stack):
    return Producer({"bootstrap.servers": stack.kafka_bootstrap, **PRODUCER_SETTINGS})


def run_indexer(stack, es, topic, index, group, batch_size=500):
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": group, **CONSUMER_SETTINGS})
    try:
        return index_messages(
            consumer, es, topic, index, DeadLetters(producer(stack), topic + ".dlq"), batch_size=batch_size
        )
    finally:
        consumer.close()


def test_one_document_per_product_and_reindexing_changes_no_count(stack, es, topics):
    topic, _ = topics
    index = f"idx-{uuid.uuid4().hex[:8]}"
    publish_products(producer(stack), PRODUCTS + PRODUCTS[:10], topic)  # ten products published twice

    first = run_indexer(stack, es, topic, index, "g1", batch_size=7)
    assert (first.consumed, first.indexed, first.dead_lettered) == (50, 50, 0)
    assert es.count(index=index)["count"] == 40
    assert es.get(index=index, id="PROD-007")["_source"] == PRODUCTS[7]
    (behind_alias,) = es.indices.get_mapping(index=index).values()  # the alias's first version, made by the run
    assert behind_alias["mappings"]["properties"]["image_url"] == INDEX_MAPPING["properties"]["image_url"]

    again = run_indexer(stack, es, topic, index, "g2")  # another group: every message once more
    assert again.indexed == 50 and es.count(index=index)["count"] == 40
    assert verify_catalog_indexed(es, index, PRODUCTS) == {"verified": 40, "index_documents": 40}


def test_offsets_are_committed_so_the_same_group_resumes_where_it_stopped(stack, es, topics):
    topic, _ = topics
    index = f"idx-{uuid.uuid4().hex[:8]}"
    publish_products(producer(stack), PRODUCTS[:20], topic)
    assert run_indexer(stack, es, topic, index, "resume").consumed == 20
    publish_products(producer(stack), PRODUCTS[20:], topic)
    assert run_indexer(stack, es, topic, index, "resume").consumed == 20
    assert es.count(index=index)["count"] == 40


def test_a_tombstone_deletes_the_document(stack, es, topics):
    topic, _ = topics
    index = f"idx-{uuid.uuid4().hex[:8]}"
    publish_products(producer(stack), PRODUCTS[:5], topic)
    p = producer(stack)
    p.produce(topic, key=b"PROD-002", value=None)
    p.produce(topic, key=b"PROD-404", value=None)  # deleting what was never indexed is fine
    assert p.flush(15) == 0

    outcome = run_indexer(stack, es, topic, index, "tomb")
    assert outcome.deleted == 2 and es.count(index=index)["count"] == 4
    assert not es.exists(index=index, id="PROD-002")


@pytest.mark.fault(
    "messages that are not JSON, not an object, or refused by the index mapping",
    "each goes to <topic>.dlq with its error and source headers; the rest are indexed",
)
def test_malformed_messages_go_to_the_dead_letter_topic_with_their_error(stack, es, topics):
    topic, dlq = topics
    index = f"idx-{uuid.uuid4().hex[:8]}"
    publish_products(producer(stack), PRODUCTS[:10], topic)
    p = producer(stack)
    p.produce(topic, key=b"PROD-bad-json", value=b"{not json")
    p.produce(topic, key=b"PROD-list", value=b"[1, 2]")
    p.produce(
        topic,
        key=b"PROD-bad-price",
        value=json.dumps({"product_id": "PROD-bad-price", "price": "not a number"}).encode(),
    )
    assert p.flush(15) == 0

    outcome = run_indexer(stack, es, topic, index, "dlq")

    assert (outcome.indexed, outcome.dead_lettered) == (10, 3)
    assert es.count(index=index)["count"] == 10
    dead = dead_letters_with_headers(stack, dlq)
    assert set(dead) == {"PROD-bad-json", "PROD-list", "PROD-bad-price"}
    assert dead["PROD-bad-json"]["error"].startswith("value is not JSON")
    assert dead["PROD-list"]["error"] == "value is JSON list, not a product object"
    assert dead["PROD-bad-price"]["error"].startswith("Elasticsearch refused the document (400")
    assert dead["PROD-bad-price"]["source.topic"] == topic and dead["PROD-bad-price"]["value"] == {
        "product_id": "PROD-bad-price",
        "price": "not a number",
    }


def dead_letters_with_headers(stack, dlq):
    found = {}
    for msg in read_messages(stack.kafka_bootstrap, dlq):
        headers = {k: v.decode() for k, v in msg.headers()}
        try:
            value = json.loads(msg.value())
        except ValueError:
            value = msg.value()
        found[msg.key().decode()] = {**headers, "value": value}
    return found


@pytest.mark.fault("indexing from a topic that does not exist", "one error naming the topic")
def test_a_missing_topic_is_one_clear_error(stack, es):
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": "x", **CONSUMER_SETTINGS})
    with pytest.raises(PublisherError, match="Kafka topic 'no-such-products' does not exist"):
        index_messages(consumer, es, "no-such-products", "idx", DeadLetters(producer(stack), "no-such-products.dlq"))
    consumer.close()


def test_verification_fails_loudly_on_a_missing_or_stale_document(stack, es, topics):
    topic, _ = topics
    index = f"idx-{uuid.uuid4().hex[:8]}"
    publish_products(producer(stack), PRODUCTS[:5], topic)
    run_indexer(stack, es, topic, index, "verify")
    expected = [dict(p) for p in PRODUCTS[:6]]
    expected[1]["image_url"] = "https://cdn/new.jpg"
    with pytest.raises(PublisherError, match="1 of 6 products missing, 1 with another image_url") as caught:
        verify_catalog_indexed(es, index, expected)
    assert "PROD-005 missing" in str(
        caught.value
    ) and "PROD-001 has image_url 'https://cdn/1.jpg', expected 'https://cdn/new.jpg'" in str(caught.value)


def _index_then_die_before_commit(bootstrap, es_url, topic, index, group):
    """Child process: index the first batch, then die hard at the moment it would commit."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, **CONSUMER_SETTINGS})

    class DiesOnCommit:
        def __getattr__(self, name):
            return getattr(consumer, name)

        def commit(self, *args, **kwargs):
            os._exit(9)  # killed after Elasticsearch accepted the batch, before the offsets were committed

    es = env_clients.elasticsearch(es_url)
    index_messages(
        DiesOnCommit(),
        es,
        topic,
        index,
        DeadLetters(Producer({"bootstrap.servers": bootstrap}), topic + ".dlq"),
        batch_size=15,
    )


@pytest.mark.fault(
    "the indexer's process killed between an accepted bulk and the offset commit",
    "the next run re-reads from the last commit and re-indexes by id: nothing lost, no document twice",
)
def test_a_crash_between_bulk_and_commit_loses_nothing_and_duplicates_nothing(stack, es, topics):
    topic, _ = topics
    index = f"idx-{uuid.uuid4().hex[:8]}"
    publish_products(producer(stack), PRODUCTS, topic)

    # The crash is a real process death; only its moment is chosen, by replacing commit().
    child = multiprocessing.get_context("spawn").Process(
        target=_index_then_die_before_commit,
        args=(stack.kafka_bootstrap, stack.elasticsearch_url, topic, index, "crash"),
    )
    child.start()
    child.join(120)
    assert child.exitcode == 9
    es.indices.refresh(index=index)
    partly = es.count(index=index)["count"]
    assert 0 < partly < len(PRODUCTS)  # part of the topic reached Elasticsearch, no offset was committed

    restarted = run_indexer(stack, es, topic, index, "crash")
    assert restarted.consumed == len(PRODUCTS)  # everything redelivered: nothing had been committed
    assert es.count(index=index)["count"] == len(PRODUCTS)
    assert verify_catalog_indexed(es, index, PRODUCTS)["verified"] == len(PRODUCTS)
    assert sorted(k for k, _ in read_topic(stack.kafka_bootstrap, topic)) == sorted(p["product_id"] for p in PRODUCTS)


@pytest.fixture
def failing_elasticsearch():
    """A real HTTP server answering 502 to everything: the media-type proxy in front of a dead engine."""
    with elasticsearch_answering_502() as url:
        yield env_clients.elasticsearch(url)


@pytest.mark.fault(
    "Elasticsearch down before indexing starts", "a service error naming the check, before any message is consumed"
)
def test_an_unanswering_elasticsearch_is_a_service_error_before_consuming(stack, failing_elasticsearch, topics):
    topic, _ = topics
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": "down", **CONSUMER_SETTINGS})
    with pytest.raises(ServiceUnavailableError, match="Elasticsearch answered 502 while checking index 'products'"):
        index_messages(
            consumer,
            failing_elasticsearch.options(max_retries=0),
            topic,
            "products",
            DeadLetters(producer(stack), topic + ".dlq"),
        )
    consumer.close()


def test_a_pretty_printed_message_is_indexed_whole(stack, es, topics):
    topic, _ = topics
    index = f"idx-{uuid.uuid4().hex[:8]}"
    p = producer(stack)
    p.produce(
        topic,
        key=b"PROD-PRETTY",
        value=json.dumps({"product_id": "PROD-PRETTY", "name": "multi\nline", "price": 2.5}, indent=2).encode(),
    )
    assert p.flush(15) == 0
    outcome = run_indexer(stack, es, topic, index, "pretty")
    assert (outcome.indexed, outcome.dead_lettered) == (1, 0)
    assert es.get(index=index, id="PROD-PRETTY")["_source"] == {
        "product_id": "PROD-PRETTY",
        "name": "multi\nline",
        "price": 2.5,
    }
