"""Step 6: publish the catalog to Kafka, one message per product (runbook: product_producer.py).

Key = product id, value = the product as JSON. The producer must be idempotent with acks=all
(PRODUCER_SETTINGS). librdkafka reports failed deliveries only (a Python callback per success
costs throughput): every failure is collected, and after flush() has waited for
every message to be either acknowledged or failed, sent - failed is what the broker confirmed.
The step fails unless every product was confirmed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from include.catalog_publisher.catalog import encode_json, product_id
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.kafka_topics import TopicSettings, ensure_topic
from include.catalog_publisher.progress import Progress

log = logging.getLogger(__name__)

# Settings every producer of this project runs with, whatever the connection adds.
PRODUCER_SETTINGS = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 20,
    # A mistyped topic must fail the publish, not silently create a new, unconsumed topic.
    "allow.auto.create.topics": False,
    "delivery.report.only.error": True,
}


def make_producer(config: dict[str, Any]):
    """A producer with PRODUCER_SETTINGS laid over `config`, which remembers librdkafka's last
    authentication error: a refused login otherwise surfaces only as "Broker transport failure"."""
    from confluent_kafka import KafkaError, Producer

    class _Producer(Producer):
        authentication_error: str | None = None
        client_config: dict[str, Any] = {}  # brokers, TLS, SASL: what an admin client needs to create the topic

    chained = config.get("error_cb")

    def on_error(error) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            producer.authentication_error = error.str()
        if chained:
            chained(error)

    producer = _Producer({**config, **PRODUCER_SETTINGS, "error_cb": on_error})
    producer.client_config = {**config, "error_cb": on_error}
    return producer


def release_producer(producer) -> None:
    """Stop a producer's threads and close its sockets now, not whenever it is garbage collected. What is still
    queued was never confirmed (a step that needs it confirmed has failed already), so it is purged first:
    close() would otherwise wait for it without a limit."""
    producer.purge()
    producer.close()


POLL_EVERY = 1000  # serve delivery reports every this many messages (and whenever the queue is full)
METADATA_TIMEOUT_S = 15.0
FLUSH_TIMEOUT_S = 120.0


@dataclass
class PublishOutcome:
    topic: str
    delivered: int
    elapsed_s: float


def check_topic(client, topic: str, where: str, settings: TopicSettings | None = None, *, create: bool = True) -> bool:
    """Fail early when the broker is unreachable or refuses the credentials; create the topic when it
    is missing (kafka_topics), which needs a make_producer producer's configuration. Whether the topic
    exists now (False only without `create`: a dry run creates nothing)."""
    from confluent_kafka import KafkaError, KafkaException

    try:
        metadata = client.list_topics(topic=topic, timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        text = error.str() if error is not None else str(exc)
        refused = text if error is not None and error.code() == KafkaError._AUTHENTICATION else None
        if hasattr(
            client, "authentication_error"
        ):  # a make_producer producer: its error callback names a refused login
            client.poll(0)
            refused = refused or client.authentication_error
        if refused:
            raise PublisherError(
                f"Kafka at {where} rejected the credentials ({refused}); "
                "check sasl.username / sasl.password in the kafka_default connection's extra "
                "(scripts: KAFKA_CLIENT_SASL_USERNAME / KAFKA_CLIENT_SASL_PASSWORD)"
            ) from None
        raise ServiceUnavailableError(
            f"cannot reach Kafka at {where} ({text}); "
            "check KAFKA_BOOTSTRAP_SERVERS or the kafka_default connection, and that the broker is running"
        ) from None
    found = metadata.topics.get(topic)
    if found is not None and found.error is None:
        return True
    if not create:
        return False
    config = getattr(client, "client_config", None)
    if not config:
        raise PublisherError(
            f"Kafka topic '{topic}' does not exist at {where}; create it (or pass --topic / the topic param)"
        )
    ensure_topic(config, topic, settings or TopicSettings.catalog(), where)
    return True


def publish_products(
    producer,
    products: Iterable[Any],
    topic: str,
    *,
    where: str = "the configured brokers",
    progress_every: float = 10.0,
) -> PublishOutcome:
    """Produce one message per product and wait until the broker confirmed every one.

    Raises PublisherError naming the first failures when any message was not confirmed, or when
    a product has no id (it could not be keyed or indexed).
    """
    check_topic(producer, topic, where)
    messages = ((product_key(producer, p, n), message_value(p)) for n, p in enumerate(products, 1))
    return send_messages(producer, topic, messages, where, progress_every)


def message_value(product: Any) -> bytes:
    """A product's message value: the product as UTF-8 JSON (what the published state digests)."""
    return encode_json(product).encode("utf-8")


def send_messages(
    producer, topic: str, messages: Iterable[tuple], where: str, progress_every: float = 10.0
) -> PublishOutcome:
    """Produce (key, value) or (key, value, headers) messages (value None: a tombstone) and wait until the broker
    confirmed every one."""
    failures = _DeliveryFailures()
    sent = 0
    progress = Progress(log, f"published to {topic}", total=0, interval=progress_every)
    for key, value, *headers in messages:
        _produce(producer, topic, key.encode("utf-8"), value, failures.on_delivery, *headers)
        sent += 1
        if sent % POLL_EVERY == 0:
            producer.poll(0)
            progress.advance(POLL_EVERY)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    progress.advance(sent % POLL_EVERY)
    progress.finish()
    delivered = sent - failures.count - remaining
    if remaining or failures.count:
        detail = "; ".join(failures.examples) or f"{remaining} messages still unconfirmed after {FLUSH_TIMEOUT_S:.0f}s"
        raise ServiceUnavailableError(
            f"Kafka confirmed {delivered} of {sent} products on topic '{topic}' at {where}: {detail}. "
            "Publishing is idempotent per product id; run the step again once the broker is healthy"
        )
    log.info("Kafka confirmed all %d messages on topic %s", delivered, topic)
    return PublishOutcome(topic, delivered, progress.elapsed())


def product_key(producer, product: Any, number: int) -> str:
    """The product's id, its message key; without one, what was produced is flushed and the publish stops."""
    pid = product_id(product)
    if pid is None:
        producer.flush(FLUSH_TIMEOUT_S)
        raise PublisherError(
            f"product #{number} has no 'product_id' or 'id'; it cannot be keyed in Kafka. "
            "Fix the catalog and publish again"
        )
    return pid


class _DeliveryFailures:
    """The failed deliveries librdkafka reports (the only ones: delivery.report.only.error), with examples."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def on_delivery(self, err, msg) -> None:  # called for failures only (delivery.report.only.error)
        """The producer's delivery callback: count a failure, keep the first five as "key: error"."""
        if err is not None:
            self.count += 1
            if len(self.examples) < 5:
                self.examples.append(f"{msg.key().decode('utf-8', 'replace') if msg.key() else '?'}: {err.str()}")


def _produce(producer, topic: str, key: bytes, value: bytes | None, on_delivery, headers=None) -> None:
    """Queue one message, letting deliveries drain while librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, on_delivery=on_delivery, headers=headers)
            return
        except BufferError:
            producer.poll(0.5)  # local queue full: let deliveries drain, then retry
