"""Clients built from flags and the standard environment (runbook scripts side).

The same clients the DAGs build from Airflow connections (`airflow_clients`): S3 from the AWS
credential chain with `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`, or a profile's endpoint_url),
Kafka from `KAFKA_BOOTSTRAP_SERVERS`, Elasticsearch from `ELASTICSEARCH_URL`. A flag, when given,
wins over the environment.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlparse

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.s3_store import Encryption, S3Target, make_store

KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
ELASTICSEARCH_ENV = "ELASTICSEARCH_URL"
# librdkafka's own log lines go through Python logging, served while the client is polled, instead
# of being written to stderr from its threads (where they landed after the command's error line).
KAFKA_LOG = logging.getLogger("librdkafka")


def s3_store(
    bucket: str,
    endpoint_url: str | None = None,
    region: str | None = None,
    retry: dict | None = None,
    encryption: Encryption | None = None,
):
    """(S3Target, store) for bucket, with credentials from the AWS chain and the endpoint it resolves."""
    import boto3

    session = boto3.Session(region_name=region) if region else boto3.Session()
    if not endpoint_url:
        endpoint_url = _configured_endpoint(session)
    target = S3Target(bucket, endpoint_url.rstrip("/") if endpoint_url else None, session.region_name)
    return target, make_store(target, session, retry=retry, encryption=encryption)


def s3_client(endpoint_url: str | None = None, region: str | None = None, connections: int = 10):
    """A boto3 S3 client from the AWS chain and the endpoint it resolves (s3_store's), `connections` in its pool."""
    import boto3
    from botocore.config import Config

    session = boto3.Session(region_name=region) if region else boto3.Session()
    endpoint_url = endpoint_url or _configured_endpoint(session)
    return session.client("s3", endpoint_url=endpoint_url, config=Config(max_pool_connections=connections))


def bucket_reader(images_dir: str):
    """What a scan of an s3:// images_dir reads through, from the environment (bucket_images.BucketReader)."""
    from include.catalog_publisher.bucket_images import BucketLocation, BucketReader

    location = BucketLocation.parse(images_dir)
    return BucketReader(location, s3_store(location.bucket)[1], s3_client)


def _configured_endpoint(session) -> str | None:
    """The S3 endpoint the AWS configuration names, in botocore's order: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
    (read here: building a client to ask costs a tenth of a second), then the profile's settings (botocore
    resolves those); none when ignore_configured_endpoint_urls is set (environment or profile, botocore's own
    lookup). Anything but AWS's own address is a custom (S3-compatible) endpoint."""
    ignored = session._session.get_config_variable("ignore_configured_endpoint_urls")
    named = [os.environ.get(name, "").strip() for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")]
    resolved = next((url for url in named if url), None) if not ignored else None
    if resolved and urlparse(resolved).scheme not in ("http", "https"):
        raise PublisherError(f"the S3 endpoint {resolved!r} is not an http:// or https:// URL; fix AWS_ENDPOINT_URL")
    if not resolved:
        resolved = session.client("s3", region_name=session.region_name or "us-east-1").meta.endpoint_url
    return None if resolved.rstrip("/").endswith(".amazonaws.com") else resolved


def kafka_bootstrap(flag: str | None) -> str:
    servers = flag or os.environ.get(KAFKA_ENV)
    if not servers:
        raise PublisherError(
            f"no Kafka brokers configured; set {KAFKA_ENV} (host:port[,host:port]) or pass --bootstrap-servers"
        )
    return servers


KAFKA_CLIENT_ENV_PREFIX = "KAFKA_CLIENT_"


def kafka_client_settings() -> dict[str, str]:
    """librdkafka settings from KAFKA_CLIENT_* variables, for TLS and SASL: KAFKA_CLIENT_SECURITY_PROTOCOL
    -> security.protocol, KAFKA_CLIENT_SASL_PASSWORD -> sasl.password (librdkafka names have no '_')."""
    return {
        name[len(KAFKA_CLIENT_ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in os.environ.items()
        if name.startswith(KAFKA_CLIENT_ENV_PREFIX)
    }


def kafka_producer(bootstrap_servers: str | None = None):
    """(producer, bootstrap servers) with the project's delivery guarantees."""
    from include.catalog_publisher.kafka_publish import make_producer  # here: S3-only scripts skip librdkafka

    servers = kafka_bootstrap(bootstrap_servers)
    return make_producer({**kafka_client_settings(), "bootstrap.servers": servers, "logger": KAFKA_LOG}), servers


def kafka_consumer(group_id: str, bootstrap_servers: str | None = None):
    """(consumer, bootstrap servers) for indexing: manual commits, partition-EOF events."""
    from confluent_kafka import Consumer

    from include.catalog_publisher.indexer import CONSUMER_SETTINGS

    servers = kafka_bootstrap(bootstrap_servers)
    return Consumer(
        {
            **kafka_client_settings(),
            "bootstrap.servers": servers,
            "group.id": group_id,
            "logger": KAFKA_LOG,
            **CONSUMER_SETTINGS,
        }
    ), servers


def elasticsearch(
    url: str | None = None, api_key: str | None = None, username: str | None = None, password: str | None = None
):
    """An Elasticsearch client from ELASTICSEARCH_URL (credentials in the URL or ELASTICSEARCH_API_KEY /
    _USERNAME / _PASSWORD)."""
    from elasticsearch import Elasticsearch

    url = url or os.environ.get(ELASTICSEARCH_ENV)
    if not url:
        raise PublisherError(
            f"no Elasticsearch configured; set {ELASTICSEARCH_ENV} (e.g. https://host:9200) or pass --elasticsearch-url"
        )
    api_key = api_key or os.environ.get("ELASTICSEARCH_API_KEY")
    username = username or os.environ.get("ELASTICSEARCH_USERNAME")
    password = password or os.environ.get("ELASTICSEARCH_PASSWORD")
    options: dict = {"request_timeout": 60}
    if api_key:
        options["api_key"] = api_key
    elif username:
        options["basic_auth"] = (username, password or "")
    return Elasticsearch(url, **options)
