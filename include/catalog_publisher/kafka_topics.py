"""Topics created when missing: the publisher's topic and the indexer's dead-letter topic.

A fresh broker has neither (the compose stack's Kafka runs with auto-creation off, as production
clusters do), and the runbook has no step that creates them, so the step that writes to a topic
creates it first, with the settings an operator chooses (settings.py: PUBLISHER_TOPIC_PARTITIONS,
PUBLISHER_TOPIC_REPLICATION_FACTOR, PUBLISHER_TOPIC_RETENTION_MS, PUBLISHER_DLQ_RETENTION_MS).

An existing topic is used as it is. Credentials without the right to create topics get one
error naming the topic and the settings to create it with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from include.catalog_publisher import settings
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError

log = logging.getLogger(__name__)

MAX_REPLICATION_FACTOR = 3
TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TopicSettings:
    """How a missing topic is created. replication_factor None: 3, or every broker when there are fewer."""

    partitions: int = settings.TOPIC_PARTITIONS.default
    replication_factor: int | None = None
    config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def catalog(cls) -> TopicSettings:
        """The catalog topic: compacted (one message per product id survives, so a new index can be
        rebuilt by replay) unless PUBLISHER_TOPIC_RETENTION_MS asks for time-based retention."""
        retention = settings.value(settings.TOPIC_RETENTION_MS)
        return cls._sized(
            {"cleanup.policy": "delete", "retention.ms": str(retention)} if retention else {"cleanup.policy": "compact"}
        )

    @classmethod
    def dead_letters(cls) -> TopicSettings:
        """The dead-letter topic: messages kept for PUBLISHER_DLQ_RETENTION_MS (30 days) for someone to look at."""
        retention = settings.value(settings.DLQ_RETENTION_MS)
        return cls._sized({"cleanup.policy": "delete", "retention.ms": str(retention)})

    @classmethod
    def _sized(cls, config: dict[str, str]) -> TopicSettings:
        """`config` with the partitions and replication every topic of this project is created with."""
        return cls(
            settings.value(settings.TOPIC_PARTITIONS),
            settings.value(settings.TOPIC_REPLICATION_FACTOR),
            config,
        )

    def describe(self, replication_factor: int) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{self.partitions} partitions, replication factor {replication_factor}" + (
            f", {extra}" if extra else ""
        )


def ensure_topic(client_config: dict, topic: str, settings: TopicSettings, where: str) -> bool:
    """Create `topic` if the cluster lacks it; True when it was created. `client_config` is the
    librdkafka configuration of the producer (brokers, TLS, SASL), used for an admin client."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config)
    try:
        metadata = admin.list_topics(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ServiceUnavailableError(
            f"cannot reach Kafka at {where} ({_text(exc)}); check the brokers and that they are running"
        ) from None
    found = metadata.topics.get(topic)
    if found is not None and found.error is None:
        return False
    replicas = settings.replication_factor or min(MAX_REPLICATION_FACTOR, max(len(metadata.brokers), 1))
    wanted = NewTopic(topic, num_partitions=settings.partitions, replication_factor=replicas, config=settings.config)
    try:
        admin.create_topics([wanted], request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        code = error.code() if isinstance(error, KafkaError) else None
        if code == KafkaError.TOPIC_ALREADY_EXISTS:  # another run created it meanwhile
            return False
        if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
            raise PublisherError(
                f"Kafka topic '{topic}' does not exist at {where} and these credentials may not create topics; "
                f"ask a Kafka admin to create it ({settings.describe(replicas)}), or grant CREATE on it"
            ) from None
        if code == KafkaError.INVALID_REPLICATION_FACTOR:
            raise PublisherError(
                f"cannot create Kafka topic '{topic}' at {where} with replication factor {replicas} ({_text(exc)}); "
                "set PUBLISHER_TOPIC_REPLICATION_FACTOR to at most the number of brokers"
            ) from None
        raise ServiceUnavailableError(f"could not create Kafka topic '{topic}' at {where}: {_text(exc)}") from None
    log.info("created Kafka topic '%s' at %s: %s", topic, where, settings.describe(replicas))
    return True


def topic_id(client_config: dict, topic: str, admin=None) -> str | None:
    """The topic's id, new at each creation (a topic deleted and created again has another), or None where the
    broker does not tell (no topic ids before Kafka 2.8, or no right to describe the topic)."""
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = admin or AdminClient(client_config)
    try:
        found = admin.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT_S)[topic]
        uuid = found.result(timeout=TIMEOUT_S).topic_id
    except KafkaException as exc:
        log.info("the id of Kafka topic '%s' is unknown (%s)", topic, _text(exc))
        return None
    if uuid is None or (uuid.get_most_significant_bits(), uuid.get_least_significant_bits()) == (0, 0):
        return None
    return str(uuid)


def cleanup_policy(client_config: dict, topic: str, admin=None) -> str | None:
    """The topic's cleanup.policy (`compact`, `delete`, `compact,delete`; "" when the topic does not set one and the
    broker does not say its default), or None where the broker does not tell (no right to DescribeConfigs)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = admin or AdminClient(client_config)
    try:
        found = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)], request_timeout=TIMEOUT_S)
        entries = next(iter(found.values())).result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        log.info("the cleanup.policy of Kafka topic '%s' is unknown (%s)", topic, _text(exc))
        return None
    entry = entries.get("cleanup.policy")
    return (entry.value or "") if entry is not None else ""


def _text(exc: Exception) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if hasattr(error, "str") else str(exc)
