"""Index the product catalog from Kafka into Elasticsearch, then check it is searchable.

index_from_kafka -> verify_index

Runs whenever publish_product_images has published (data-aware schedule on the Kafka topic asset),
and by hand. Consumes until caught up with the topic, indexes with the bulk API (document id =
product id, tombstones delete, refused messages to <topic>.dlq), commits offsets only after
Elasticsearch accepted them; then reads the published catalog's products back from the index.
Orchestration only: each task calls include.catalog_publisher.indexer_tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from include.catalog_publisher.assets import PRODUCTS_TOPIC


def _published(triggering_asset_events, params) -> dict:
    """The topic and catalog of the publish that triggered this run, else the params (manual runs)."""
    events = triggering_asset_events[PRODUCTS_TOPIC] if triggering_asset_events and PRODUCTS_TOPIC in triggering_asset_events else []
    extra = events[-1].extra if events else {}
    return {"topic": extra.get("topic", params["topic"]), "catalog": extra.get("catalog", params["catalog_file"])}


@dag(
    dag_id="index_product_catalog",
    description="Index the product catalog from Kafka into Elasticsearch and verify it",
    schedule=[PRODUCTS_TOPIC],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # one consumer group member at a time: runs would only split the partitions
    tags=["catalog", "kafka", "elasticsearch"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True, "execution_timeout": timedelta(hours=2)},
    params={
        "topic": Param(
            "products", type="string", minLength=1, title="Kafka topic", description="Used for manual runs; asset-triggered runs index the published topic."
        ),
        "index": Param("products", type="string", pattern=r"^[a-z0-9][a-z0-9._-]*$", title="Elasticsearch index"),
        "group_id": Param("catalog-indexer", type="string", minLength=1, title="Consumer group", description="Offsets are committed for this group."),
        "batch_size": Param(500, type="integer", minimum=1, maximum=10000, title="Messages per bulk request"),
        "catalog_file": Param(
            "data/products_with_s3_urls.json",
            type="string",
            minLength=1,
            title="Catalog to verify",
            description="Used for manual runs; asset-triggered runs verify the catalog the publisher wrote.",
        ),
    },
)
def index_product_catalog():
    @task
    def index_from_kafka(params=None, triggering_asset_events=None) -> dict:
        from include.catalog_publisher import indexer_tasks

        topic = _published(triggering_asset_events, params)["topic"]
        return indexer_tasks.index_from_kafka(topic, params["index"], params["group_id"], params["batch_size"])

    @task
    def verify_index(indexed: dict, params=None, triggering_asset_events=None) -> dict:
        from include.catalog_publisher import indexer_tasks

        return indexer_tasks.verify_index(indexed["index"], _published(triggering_asset_events, params)["catalog"])

    verify_index(index_from_kafka())


index_product_catalog()
