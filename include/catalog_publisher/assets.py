"""The Airflow assets the DAGs share (imported by DAG files: nothing here but the definitions)."""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

# The publisher's topic is a param, so its asset is known only when it runs: publish_to_kafka attaches
# the asset of the topic it wrote (topic_asset) to this alias, and index_product_catalog is scheduled on
# the alias. Airflow 3.3 resolves an alias when it evaluates the schedule, so a topic's first publish
# triggers the indexer too (no re-parse needed). Each event's extra names the topic, the product count
# and the published catalog file.
PUBLISHED_TOPICS = AssetAlias(name="published_catalog_topics")


def topic_asset(topic: str, kafka_conn_id: str = "kafka_default") -> Asset:
    """The asset of one Kafka topic: one per topic, so lineage and the Assets view show where each went."""
    return Asset(name=f"kafka_topic_{topic}", uri=f"kafka://{kafka_conn_id}/{topic}")
