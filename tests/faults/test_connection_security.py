"""Transport security and authentication configured only in Airflow connections, against real servers:
Kafka over TLS (a TLS terminator in front of Tansu, which clients are told to use) and Elasticsearch
over HTTPS with basic authentication (a loopback HTTPS proxy in front of osmem that refuses requests
without the right Authorization header, as Elasticsearch's security layer does).

Tansu 0.6.0's own SASL and TLS could not be used: with `--authentication` every SCRAM/PLAIN handshake
from librdkafka ended in "NoSharedMechanism", and `--cert` with `--key` is refused by its command line.
SASL settings travel the same way as the TLS settings tested here: the connection's extra, as is, to
librdkafka.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid

import pytest

from catalog_publisher import airflow_clients
from catalog_publisher.embedded_stack import HOST, free_port, wait_ready
from catalog_publisher.errors import PublisherError, ServiceUnavailableError
from catalog_publisher.indexer import DeadLetters, index_messages
from catalog_publisher.kafka_publish import publish_products
from tests.faults.conftest import self_signed_certificate, tls_terminator
from tests.helpers import fault_proxy

PRODUCTS = [{"product_id": f"PROD-TLS-{i}", "name": f"Product {i}", "image_url": f"https://b/{i}.jpg"} for i in range(20)]


@pytest.fixture
def kafka_over_tls(own_stack, tmp_path):
    """The stack's broker replaced by one that advertises a TLS port; yields (bootstrap, CA file)."""
    stack, state = own_stack
    cert, key = self_signed_certificate(tmp_path)
    plain, tls = free_port(), free_port()
    stack.kill("tansu")
    args, env = stack.tansu_command(state.s3_endpoint, f"tcp://{HOST}:{plain}", f"tcp://{HOST}:{tls}")
    with tls_terminator(plain, cert, key, tls), open(tmp_path / "tansu.log", "wb") as log:
        broker = subprocess.Popen(args, env={**env, "PATH": "/usr/bin:/bin"}, stdout=log, stderr=subprocess.STDOUT)
        try:
            bootstrap = f"{HOST}:{tls}"
            wait_ready("Tansu behind TLS", lambda: _lists_topics(bootstrap, cert), broker, tmp_path / "tansu.log", 60)
            yield bootstrap, cert
        finally:
            broker.kill()
            broker.wait()
    stack.revive("tansu")


def _lists_topics(bootstrap: str, ca: str) -> bool:
    from confluent_kafka.admin import AdminClient

    return "products" in AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca}).list_topics(timeout=3).topics


def use_connection(monkeypatch, name: str, connection: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(connection))


@pytest.mark.fault(
    "Kafka reached over TLS, configured only in the kafka_default connection (security.protocol, ssl.ca.location)",
    "publish and consume work through the connection; without the CA the client refuses the broker's certificate and the task fails naming the broker",
)
def test_kafka_over_tls_is_configured_by_the_connection_alone(kafka_over_tls, monkeypatch):
    bootstrap, ca = kafka_over_tls
    use_connection(
        monkeypatch, "kafka_default", {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca}}
    )
    producer, where = airflow_clients.kafka_producer()
    assert publish_products(producer, PRODUCTS, "products", where=where).delivered == len(PRODUCTS)

    consumer = airflow_clients.kafka_consumer(f"tls-{uuid.uuid4().hex[:8]}")
    consumer.subscribe(["products"])
    seen = set()
    while not {p["product_id"] for p in PRODUCTS} <= seen:
        message = consumer.poll(10)
        assert message is not None, f"consumed {len(seen)} products over TLS, then nothing"
        if message.error() is None:
            seen.add(message.key().decode())
    consumer.close()

    use_connection(monkeypatch, "kafka_default", {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, "security.protocol": "SSL"}})
    producer, where = airflow_clients.kafka_producer()
    with pytest.raises(ServiceUnavailableError, match=rf"cannot reach Kafka at {bootstrap}"):
        publish_products(producer, PRODUCTS, "products", where=where)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def require_authorization(expected: str):
    """Elasticsearch's security layer, as a fault: 401 unless the request carries `expected`."""

    def fault(method: str, path: str, headers: dict[str, str], body: bytes | None):
        if headers.get("authorization") == expected:
            return None
        error = {"error": {"type": "security_exception", "reason": "unable to authenticate user"}, "status": 401}
        return 401, {"Content-Type": "application/json", "WWW-Authenticate": 'Basic realm="security"'}, json.dumps(error).encode()

    return fault


@pytest.mark.fault(
    "Elasticsearch over HTTPS with basic authentication, configured only in the elasticsearch_default connection",
    "indexing works with the connection's login, password and ca_certs; a wrong password fails at once with 'rejected the credentials', naming where to fix it",
)
def test_elasticsearch_over_https_with_credentials_from_the_connection(stack, topic, tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    producer = airflow_clients.kafka_producer()[0]
    publish_products(producer, PRODUCTS, topic)
    with fault_proxy(stack.elasticsearch_url, require_authorization(basic("elastic", "s3cret-pw")), tls=(cert, key)) as url:
        port = int(url.rsplit(":", 1)[1])
        connection = {
            "conn_type": "elasticsearch",
            "host": HOST,
            "port": port,
            "schema": "https",
            "login": "elastic",
            "password": "s3cret-pw",
            "extra": {"ca_certs": cert},
        }
        use_connection(monkeypatch, "elasticsearch_default", connection)
        es = airflow_clients.elasticsearch()
        index = f"secure-{uuid.uuid4().hex[:8]}"
        dead = DeadLetters(producer, topic + ".dlq")
        outcome = index_messages(airflow_clients.kafka_consumer(f"g-{uuid.uuid4().hex[:8]}"), es, topic, index, dead)
        assert outcome.indexed == len(PRODUCTS)
        assert es.count(index=index)["count"] == len(PRODUCTS)

        use_connection(monkeypatch, "elasticsearch_default", {**connection, "password": "wrong"})
        with pytest.raises(PublisherError, match=r"Elasticsearch rejected the credentials \(401\); .*elasticsearch_default connection"):
            index_messages(airflow_clients.kafka_consumer(f"g-{uuid.uuid4().hex[:8]}"), airflow_clients.elasticsearch(), topic, f"other-{index}", dead)
