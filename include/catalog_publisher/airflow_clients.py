"""Clients built from Airflow connections through the providers' hooks (DAG side only).

Runbook scripts build the same clients from the environment (`env_clients`); the steps never
know which one they got.
"""

from __future__ import annotations

from include.catalog_publisher.kafka_publish import make_producer
from include.catalog_publisher.s3_store import Encryption, S3Target, make_store

AWS_CONN_ID = "aws_default"
KAFKA_CONN_ID = "kafka_default"
ELASTICSEARCH_CONN_ID = "elasticsearch_default"


def _aws_hook(aws_conn_id: str):
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")


def s3_target(bucket: str, aws_conn_id: str = AWS_CONN_ID, hook=None) -> S3Target:
    """Where the bucket is (endpoint from the connection's extra, region), for URLs: no credentials resolved."""
    hook = hook or _aws_hook(aws_conn_id)
    return S3Target(bucket, hook.conn_config.get_service_endpoint_url("s3"), hook.region_name)


def s3_store(bucket: str, aws_conn_id: str = AWS_CONN_ID, encryption: Encryption | None = None):
    """(S3Target, store) from the AWS connection: credentials, region, and `endpoint_url` in its extra."""
    hook = _aws_hook(aws_conn_id)
    target = s3_target(bucket, hook=hook)
    return target, make_store(target, hook.get_session(), encryption=encryption)


def s3_client(aws_conn_id: str = AWS_CONN_ID, connections: int = 10):
    """A boto3 S3 client from the AWS connection, for what the object store client does not do (a checksum, a
    delimited listing, a copy from another bucket), with `connections` in its pool (one per thread using it)."""
    from botocore.config import Config

    hook = _aws_hook(aws_conn_id)
    config = (hook.conn_config.botocore_config or Config()).merge(Config(max_pool_connections=connections))
    return hook.get_client_type(config=config)  # the connection's config_kwargs kept, the pool sized


def kafka_producer(kafka_conn_id: str = KAFKA_CONN_ID):
    """(producer, bootstrap servers) from the Kafka connection, always idempotent with acks=all."""
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
    from confluent_kafka import Producer

    class _IdempotentProducerHook(KafkaProducerHook):
        # _get_client is the provider's own extension point: the connection's config (with its
        # callbacks and MSK IAM resolved) goes in, our delivery guarantees are laid over it.
        def _get_client(self, config) -> Producer:
            return make_producer(config)

    hook = _IdempotentProducerHook(kafka_config_id=kafka_conn_id)
    where = hook.get_connection(kafka_conn_id).extra_dejson.get("bootstrap.servers", kafka_conn_id)
    return hook.get_producer(), where


def kafka_consumer(group_id: str, kafka_conn_id: str = KAFKA_CONN_ID):
    """A consumer (not yet subscribed) from the Kafka connection, with the indexer's commit discipline."""
    from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
    from confluent_kafka import Consumer

    from include.catalog_publisher.indexer import CONSUMER_SETTINGS

    class _IndexingConsumerHook(KafkaConsumerHook):
        def _get_client(self, config) -> Consumer:
            return super()._get_client({**config, "group.id": group_id, **CONSUMER_SETTINGS})

    return _IndexingConsumerHook(topics=[], kafka_config_id=kafka_conn_id).get_conn  # a cached property


def elasticsearch(es_conn_id: str = ELASTICSEARCH_CONN_ID):
    """The Elasticsearch client the provider's hook builds from the connection (host, port, schema, login, extras)."""
    from airflow.providers.elasticsearch.hooks.elasticsearch import ElasticsearchSQLHook

    return ElasticsearchSQLHook(elasticsearch_conn_id=es_conn_id).get_conn().es
