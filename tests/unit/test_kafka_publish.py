"""Step 6: one confirmed Kafka message per product, against a real Tansu broker.

Here what needs no broker; the tests against Tansu are in tests/integration/test_kafka_publish_on_broker.py."""

from __future__ import annotations

import pytest

from include.catalog_publisher.errors import ServiceUnavailableError
from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, publish_products
from tests.helpers import KAFKA_PRODUCTS as PRODUCTS
from tests.helpers import kafka_producer as producer
from tests.helpers import unused_port


def test_the_producer_is_idempotent_with_acks_all():
    assert PRODUCER_SETTINGS["enable.idempotence"] is True and PRODUCER_SETTINGS["acks"] == "all"


@pytest.mark.fault("Kafka unreachable", "a service error naming the bootstrap servers (retried by Airflow)")
def test_an_unreachable_broker_is_a_service_error_naming_where(monkeypatch):
    monkeypatch.setattr("include.catalog_publisher.kafka_publish.METADATA_TIMEOUT_S", 3.0)
    where = f"127.0.0.1:{unused_port()}"
    with pytest.raises(
        ServiceUnavailableError,
        match=f"cannot reach Kafka at {where}.*KAFKA_BOOTSTRAP_SERVERS or the kafka_default connection",
    ):
        publish_products(producer(where), PRODUCTS, "products", where=where)
