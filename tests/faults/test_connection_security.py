"""Transport security and authentication configured only in Airflow connections (and, for the runbook
scripts, in KAFKA_CLIENT_* variables), against real servers: Kafka over TLS (a TLS terminator in front
of Tansu, which clients are told to use), Kafka requiring SASL/PLAIN (a gateway in front of Tansu that
performs the SASL exchange with librdkafka, as a SASL_PLAINTEXT listener does), and Elasticsearch over
HTTPS with basic authentication (an HTTPS proxy in front of osmem refusing requests without the right
Authorization header, as Elasticsearch's security layer does).

Why fronts rather than Tansu's own: Tansu 0.6.0 with `--authentication` answered every SCRAM and PLAIN
handshake from librdkafka with "NoSharedMechanism" (users made with `tansu user create`), and its
`--cert` with `--key` is refused by its command line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from devstack.embedded_stack import HOST, free_port, wait_ready
from include.catalog_publisher import airflow_clients
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.indexer import DeadLetters, index_messages
from include.catalog_publisher.kafka_publish import publish_products
from tests.faults.conftest import sasl_plain_gateway, self_signed_certificate, tls_terminator
from tests.helpers import fault_proxy

PRODUCTS = [
    {"product_id": f"PROD-TLS-{i}", "name": f"Product {i}", "image_url": f"https://b/{i}.jpg"} for i in range(20)
]


@contextlib.contextmanager
def broker_behind(own_stack, tmp_path, front, client_config: dict) -> Iterator[str]:
    """The module stack's broker replaced by one that advertises `front(plain_port, public_port)` (a
    TLS terminator, a SASL gateway) as its address; yields the bootstrap clients use."""
    stack, state = own_stack
    plain, public = free_port(), free_port()
    stack.kill("tansu")
    args, env = stack.tansu_command(state.s3_endpoint, f"tcp://{HOST}:{plain}", f"tcp://{HOST}:{public}")
    try:
        with front(plain, public), open(tmp_path / "tansu.log", "wb") as log:
            broker = subprocess.Popen(args, env={**env, "PATH": "/usr/bin:/bin"}, stdout=log, stderr=subprocess.STDOUT)
            try:
                bootstrap = f"{HOST}:{public}"
                wait_ready(
                    "Tansu behind its front",
                    lambda: _lists_topics({"bootstrap.servers": bootstrap, **client_config}),
                    broker,
                    tmp_path / "tansu.log",
                    60,
                )
                yield bootstrap
            finally:
                broker.kill()
                broker.wait()
    finally:
        stack.revive("tansu")


@pytest.fixture
def kafka_over_tls(own_stack, tmp_path):
    """Yields (bootstrap, CA file) of the broker behind a TLS terminator."""
    cert, key = self_signed_certificate(tmp_path)
    front = lambda plain, public: tls_terminator(plain, cert, key, public)  # noqa: E731
    with broker_behind(own_stack, tmp_path, front, {"security.protocol": "SSL", "ssl.ca.location": cert}) as bootstrap:
        yield bootstrap, cert


def _lists_topics(config: dict) -> bool:
    return bool(AdminClient(config).list_topics(timeout=3).brokers)  # the broker answers through its front


def use_connection(monkeypatch, name: str, connection: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(connection))


@pytest.mark.fault(
    "Kafka reached over TLS, configured only in the kafka_default connection (security.protocol, ssl.ca.location)",
    "publish and consume work through the connection; "
    "without the CA the client refuses the broker's certificate and the task fails naming the broker",
)
def test_kafka_over_tls_is_configured_by_the_connection_alone(kafka_over_tls, monkeypatch):
    bootstrap, ca = kafka_over_tls
    use_connection(
        monkeypatch,
        "kafka_default",
        {
            "conn_type": "kafka",
            "extra": {"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca},
        },
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

    use_connection(
        monkeypatch,
        "kafka_default",
        {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, "security.protocol": "SSL"}},
    )
    producer, where = airflow_clients.kafka_producer()
    with pytest.raises(ServiceUnavailableError, match=rf"cannot reach Kafka at {bootstrap}"):
        publish_products(producer, PRODUCTS, "products", where=where)


SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", "sasl.username": "publisher"}


@pytest.mark.fault(
    "Kafka requiring SASL/PLAIN, credentials only in the kafka_default connection (sasl.* extras)",
    "publish works with the right password; "
    "a wrong one fails at once with 'Kafka rejected the credentials', naming the connection",
)
def test_kafka_sasl_credentials_come_from_the_connection(own_stack, tmp_path, monkeypatch):
    front = lambda plain, public: sasl_plain_gateway(plain, {"publisher": "s3cret-kafka"}, public)  # noqa: E731
    with broker_behind(own_stack, tmp_path, front, {**SASL, "sasl.password": "s3cret-kafka"}) as bootstrap:
        use_connection(
            monkeypatch,
            "kafka_default",
            {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, **SASL, "sasl.password": "s3cret-kafka"}},
        )
        producer, where = airflow_clients.kafka_producer()
        assert publish_products(producer, PRODUCTS, "products", where=where).delivered == len(PRODUCTS)

        use_connection(
            monkeypatch,
            "kafka_default",
            {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, **SASL, "sasl.password": "wrong"}},
        )
        producer, where = airflow_clients.kafka_producer()
        with pytest.raises(
            PublisherError, match=rf"Kafka at {bootstrap} rejected the credentials.*kafka_default connection"
        ):
            publish_products(producer, PRODUCTS, "products", where=where)

        # The runbook's producer takes the same settings from KAFKA_CLIENT_* variables.
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps(PRODUCTS))
        script = [
            sys.executable,
            str(project_root() / "scripts/kafka/product_producer.py"),
            "--products-file",
            str(catalog),
            "--topic",
            "products",
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_CLIENT_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        }
        env |= {"KAFKA_CLIENT_SASL_MECHANISMS": "PLAIN", "KAFKA_CLIENT_SASL_USERNAME": "publisher"}
        done = subprocess.run(
            script,
            env={**env, "KAFKA_CLIENT_SASL_PASSWORD": "s3cret-kafka"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        done = subprocess.run(
            script, env={**env, "KAFKA_CLIENT_SASL_PASSWORD": "wrong"}, capture_output=True, text=True, timeout=120
        )
        assert (
            done.returncode == 1
            and "rejected the credentials" in done.stderr
            and "KAFKA_CLIENT_SASL_PASSWORD" in done.stderr
        ), done.stderr


@pytest.mark.fault(
    "the topic is missing and the Kafka credentials may not create topics (CreateTopics refused as by an ACL)",
    "one error naming the topic, the partitions and replication it needs, and who can create it; nothing published",
)
def test_credentials_without_the_right_to_create_topics_get_one_error_naming_the_topic(
    own_stack, tmp_path, monkeypatch
):
    front = lambda plain, public: sasl_plain_gateway(plain, {"publisher": "pw"}, public, may_create_topics=False)  # noqa: E731
    with broker_behind(own_stack, tmp_path, front, {**SASL, "sasl.password": "pw"}) as bootstrap:
        connection = {"bootstrap.servers": bootstrap, **SASL, "sasl.password": "pw"}
        use_connection(monkeypatch, "kafka_default", {"conn_type": "kafka", "extra": connection})
        producer, where = airflow_clients.kafka_producer()
        with pytest.raises(PublisherError) as refused:
            publish_products(producer, PRODUCTS, "never-created", where=where)
        assert str(refused.value).startswith(f"Kafka topic 'never-created' does not exist at {bootstrap}")
        assert "may not create topics" in str(refused.value) and "3 partitions, replication factor 1" in str(
            refused.value
        )

        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps(PRODUCTS))
        script = [
            sys.executable,
            str(project_root() / "scripts/kafka/product_producer.py"),
            "--products-file",
            str(catalog),
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_CLIENT_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        }
        env |= {
            "KAFKA_CLIENT_SASL_MECHANISMS": "PLAIN",
            "KAFKA_CLIENT_SASL_USERNAME": "publisher",
            "KAFKA_CLIENT_SASL_PASSWORD": "pw",
        }
        done = subprocess.run(
            [*script, "--topic", "never-created"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: Kafka topic 'never-created' does not exist"), (
            done.stderr
        )
    admin = AdminClient({"bootstrap.servers": own_stack[1].kafka_bootstrap})
    assert "never-created" not in admin.list_topics(timeout=15).topics


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def require_authorization(expected: str):
    """Elasticsearch's security layer, as a fault: 401 unless the request carries `expected`."""

    def fault(method: str, path: str, headers: dict[str, str], body: bytes | None):
        if headers.get("authorization") == expected:
            return None
        error = {"error": {"type": "security_exception", "reason": "unable to authenticate user"}, "status": 401}
        return (
            401,
            {"Content-Type": "application/json", "WWW-Authenticate": 'Basic realm="security"'},
            json.dumps(error).encode(),
        )

    return fault


@pytest.mark.fault(
    "Elasticsearch over HTTPS with basic authentication, configured only in the elasticsearch_default connection",
    "indexing works with the connection's login, password and ca_certs; "
    "a wrong password fails at once with 'rejected the credentials', naming where to fix it",
)
def test_elasticsearch_over_https_with_credentials_from_the_connection(stack, topic, tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    producer = airflow_clients.kafka_producer()[0]
    publish_products(producer, PRODUCTS, topic)
    with fault_proxy(
        stack.elasticsearch_url, require_authorization(basic("elastic", "s3cret-pw")), tls=(cert, key)
    ) as url:
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
        with pytest.raises(
            PublisherError, match=r"Elasticsearch rejected the credentials \(401\); .*elasticsearch_default connection"
        ):
            index_messages(
                airflow_clients.kafka_consumer(f"g-{uuid.uuid4().hex[:8]}"),
                airflow_clients.elasticsearch(),
                topic,
                f"other-{index}",
                dead,
            )
