"""The bodies of the index_product_catalog tasks: the indexer wired to Airflow connections.

Like publisher_tasks, each takes and returns only names, paths and counts.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from include.catalog_publisher import airflow_clients, defaults
from include.catalog_publisher.allowed_inputs import confine
from include.catalog_publisher.catalog import read_products
from include.catalog_publisher.indexer import (
    MAPPING_FIX,
    DeadLetters,
    index_messages,
    mapping_drift,
    verify_catalog_indexed,
)
from include.catalog_publisher.kafka_publish import release_producer
from include.catalog_publisher.run_artifacts import fetch_artifact

log = logging.getLogger(__name__)


def index_from_kafka(topic: str, index: str, group_id: str, batch_size: int) -> dict[str, Any]:
    """Consume until caught up with the topic, indexing as it goes. Every client made is closed, whatever fails."""
    with contextlib.ExitStack() as clients:
        es = airflow_clients.elasticsearch()
        clients.callback(es.close)
        consumer = airflow_clients.kafka_consumer(group_id)
        clients.callback(consumer.close)  # leaves the group at once instead of after its session timeout
        producer, _ = airflow_clients.kafka_producer()
        clients.callback(release_producer, producer)  # a batch not committed is consumed again
        dead_letters = DeadLetters(producer, topic + defaults.DEAD_LETTER_SUFFIX)
        outcome = index_messages(consumer, es, topic, index, dead_letters, batch_size=batch_size)
    return {"topic": topic, "index": index, **outcome.as_dict()}


def verify_index(index: str, catalog_file: str) -> dict[str, Any]:
    """Every product of the published catalog is searchable with its image_url; and whether the index's mapping
    is still the code's (mapping_drift: logged, and shown by the run report)."""
    catalog_file = confine(catalog_file, "catalog_file")
    scratch = tempfile.TemporaryDirectory(prefix="verify-")
    with scratch, contextlib.closing(airflow_clients.elasticsearch()) as es:
        local = fetch_artifact(catalog_file, Path(scratch.name))
        result = verify_catalog_indexed(es, index, read_products(local))
        drift = mapping_drift(es, index)
    if drift:
        log.warning("the mapping of index %s is not the code's: %s; %s", index, "; ".join(drift), MAPPING_FIX)
    where = catalog_file if catalog_file.startswith("s3://") else str(local)
    return {"index": index, "catalog": where, **result, "mapping_drift": drift}
