"""Index the product catalog from Kafka into Elasticsearch, then check it is searchable.

index_from_kafka -> verify_index

Runs whenever publish_product_images has published (data-aware schedule on the Kafka topic asset),
and by hand. Consumes until caught up with the topic, indexes with the bulk API (document id =
product id, tombstones delete, refused messages to <topic>.dlq), commits offsets only after
Elasticsearch accepted them; then reads the published catalog's products back from the index.
Orchestration only: each task calls include.catalog_publisher.indexer_tasks.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.catalog_publisher.assets import PRODUCTS_TOPIC
from include.catalog_publisher.dag_defaults import DEFAULT_ARGS, PATH_PATTERN, START_DATE, TOPIC_PATTERN
from include.catalog_publisher.dag_defaults import INDEXER_PARAMS as DEFAULTS

# The form's sections, in this order.
WHAT = "What to index (manual runs)"
WHERE = "Where it goes"
HOW = "How: batching and offsets"


def _published(triggering_asset_events, params) -> dict:
    """The topic and catalog of the publish that triggered this run, else the params (manual runs)."""
    has_events = triggering_asset_events and PRODUCTS_TOPIC in triggering_asset_events
    events = triggering_asset_events[PRODUCTS_TOPIC] if has_events else []
    extra = events[-1].extra if events else {}
    return {"topic": extra.get("topic", params["topic"]), "catalog": extra.get("catalog", params["catalog_file"])}


@dag(
    dag_id="index_product_catalog",
    dag_display_name="Index product catalog",
    description="Index the product catalog from Kafka into Elasticsearch and verify it",
    schedule=[PRODUCTS_TOPIC],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # one consumer group member at a time: runs would only split the partitions
    tags=["catalog", "kafka", "elasticsearch"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        "topic": Param(
            DEFAULTS["topic"],
            type="string",
            pattern=TOPIC_PATTERN,
            title="Kafka topic",
            section=WHAT,
            description_md="The topic to index, e.g. `products`. Runs started by a publish index the topic it "
            "published to. 1-249 letters, digits, `.`, `_` or `-`.",
        ),
        "catalog_file": Param(
            DEFAULTS["catalog_file"],
            type="string",
            minLength=1,
            pattern=PATH_PATTERN,
            title="Catalog to verify",
            section=WHAT,
            description_md="The catalog whose products must be searchable afterwards, e.g. "
            "`data/products_with_s3_urls.json` (relative to the project home). Runs started by a publish "
            "verify the catalog it wrote.",
        ),
        "index": Param(
            DEFAULTS["index"],
            type="string",
            maxLength=255,
            pattern=r"^[a-z0-9][a-z0-9._-]*$",
            title="Elasticsearch index",
            section=WHERE,
            description_md="The index the products go to, e.g. `products`; created with the catalog mapping when "
            "missing. Lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit.",
        ),
        "group_id": Param(
            DEFAULTS["group_id"],
            type="string",
            minLength=1,
            pattern=PATH_PATTERN,
            title="Consumer group",
            section=HOW,
            description_md="The Kafka consumer group whose committed offsets say where indexing resumes. A new "
            "group reads the topic from the start (a full re-index).",
        ),
        "batch_size": Param(
            DEFAULTS["batch_size"],
            type="integer",
            minimum=1,
            maximum=10000,
            title="Messages per bulk request",
            section=HOW,
            description_md="Documents per Elasticsearch bulk request; offsets are committed after each. 1 to 10,000.",
        ),
    },
)
def index_product_catalog():
    @task(task_display_name="Index from Kafka")
    def index_from_kafka(params=None, triggering_asset_events=None) -> dict:
        from include.catalog_publisher import indexer_tasks

        topic = _published(triggering_asset_events, params)["topic"]
        return indexer_tasks.index_from_kafka(topic, params["index"], params["group_id"], params["batch_size"])

    @task(task_display_name="Verify the index")
    def verify_index(indexed: dict, params=None, triggering_asset_events=None) -> dict:
        from include.catalog_publisher import indexer_tasks

        return indexer_tasks.verify_index(indexed["index"], _published(triggering_asset_events, params)["catalog"])

    verify_index(index_from_kafka())


index_product_catalog()
