"""Index the product catalog from Kafka into Elasticsearch, then check it is searchable.

plan_consumers -> index_partitions (mapped: the consumers of each topic) -> indexing_totals
-> verify_index

Runs whenever publish_product_images has published (data-aware schedule on the alias its publishes
attach their topic's asset to), and by hand. Publishes that arrive while a run is going are merged
into the next run: it indexes every topic they wrote and verifies every catalog, in the order they
were published. Each topic is consumed by several members of one consumer group (one per partition
by default), each indexing with the bulk API (document id = product id, tombstones delete, refused
messages to <topic>.dlq) and committing its own partitions only after Elasticsearch accepted them.
Orchestration only: the task bodies are in include.catalog_publisher (indexer_tasks, indexer).
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from include.catalog_publisher.assets import PUBLISHED_TOPICS
from include.catalog_publisher.dag_defaults import DEFAULT_ARGS, START_DATE, mapped_values
from include.catalog_publisher.params import indexer_params


def _published(triggering_asset_events, params) -> list[dict]:
    """Every publish that triggered this run, oldest first, as {"topic", "catalog"}; the params for a manual run.

    Several publishes can be merged into one run (they arrive while a run is going, max_active_runs=1):
    each is honoured. An event without a topic or catalog (one posted by hand) falls back to the params.
    """
    events = triggering_asset_events[PUBLISHED_TOPICS] if triggering_asset_events else []
    published = [
        {"topic": e.extra.get("topic") or params["topic"], "catalog": e.extra.get("catalog") or params["catalog_file"]}
        for e in sorted(events, key=lambda e: e.timestamp)
    ]
    return published or [{"topic": params["topic"], "catalog": params["catalog_file"]}]


def _committed(outcomes: list[dict], topic: str) -> list[int]:
    """The partitions of the topic whose offsets some consumer committed."""
    return sorted({p for o in outcomes if o["topic"] == topic for p in o["partitions"]})


@dag(
    dag_id="index_product_catalog",
    dag_display_name="Index product catalog",
    description="Index the product catalog from Kafka into Elasticsearch and verify it",
    schedule=[PUBLISHED_TOPICS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # a second run's consumers would only split the partitions; its publishes wait and merge
    tags=["catalog", "kafka", "elasticsearch"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params=indexer_params(),
)
def index_product_catalog():
    @task(task_display_name="Plan the consumers")
    def plan_consumers(params=None, triggering_asset_events=None) -> list[dict]:
        import contextlib

        from include.catalog_publisher import airflow_clients, allowed_outputs
        from include.catalog_publisher.indexer import plan_consumers as plan
        from include.catalog_publisher.indexer import topic_partitions

        published = _published(triggering_asset_events, params)
        allowed_outputs.check_indexer(params, [p["topic"] for p in published])  # before anything is written
        with contextlib.closing(airflow_clients.kafka_consumer(params["group_id"])) as metadata:  # never subscribes
            partitions = topic_partitions(metadata, [p["topic"] for p in published])
        return plan(partitions, params["consumers"], params["group_id"])

    # multiple_outputs=False: a task annotated `-> dict` would also push each key of its result as an XCom of its
    # own (one API call each); the tasks read the whole result.
    @task(multiple_outputs=False, task_display_name="Index partitions", map_index_template="{{ consumer_label }}")
    def index_partitions(consumer: dict, params=None) -> dict:
        from include.catalog_publisher import indexer_tasks

        topic, group = consumer["topic"], consumer["group"]
        get_current_context()["consumer_label"] = f"{topic}: consumer {consumer['consumer']} of {consumer['of']}"
        result = indexer_tasks.index_from_kafka(topic, params["index"], group, params["batch_size"])
        return {**result, "consumer": consumer["consumer"], "of": consumer["of"]}

    @task(multiple_outputs=False, task_display_name="Indexing totals")
    def indexing_totals(consumed, params=None) -> dict:
        """The consumers' outcomes added up (a rebalance re-reads what was not committed, so consumed >= messages)."""
        outcomes = mapped_values(consumed)
        topics = list(dict.fromkeys(o["topic"] for o in outcomes))
        counts = ("consumed", "indexed", "deleted", "dead_lettered", "superseded", "batches", "retried_items")
        counts += ("assignments",)
        return {
            "topic": topics[0] if len(topics) == 1 else ", ".join(topics),
            "topics": topics,
            "index": params["index"],
            **{name: sum(o.get(name, 0) for o in outcomes) for name in counts},
            "elapsed_s": max((o.get("elapsed_s", 0.0) for o in outcomes), default=0.0),  # they ran side by side
            "consumers": len(outcomes),
            "partitions": {t: _committed(outcomes, t) for t in topics},
        }

    @task(multiple_outputs=False, task_display_name="Verify the index")
    def verify_index(indexed: dict, params=None, triggering_asset_events=None) -> dict:
        """Every published catalog, oldest first; the result keeps the newest's figures at the top level."""
        from include.catalog_publisher import indexer_tasks

        catalogs = dict.fromkeys(p["catalog"] for p in _published(triggering_asset_events, params))  # each once
        results = [indexer_tasks.verify_index(indexed["index"], catalog) for catalog in catalogs]
        return {**results[-1], "catalogs": results}

    consumed = index_partitions.expand(consumer=plan_consumers())
    verify_index(indexing_totals(consumed))


index_product_catalog()
