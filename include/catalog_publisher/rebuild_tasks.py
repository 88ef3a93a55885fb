"""The bodies of the rebuild_product_index tasks: reindex.py wired to Airflow connections.

Like indexer_tasks, each takes and returns only names and counts (the plan travels as a dict).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from include.catalog_publisher import airflow_clients, defaults, settings
from include.catalog_publisher.allowed_inputs import confine
from include.catalog_publisher.catalog import read_products
from include.catalog_publisher.indexer import DeadLetters
from include.catalog_publisher.kafka_publish import release_producer
from include.catalog_publisher.reindex import Plan, Switch, plan, verify_version
from include.catalog_publisher.run_artifacts import fetch_artifact


@contextlib.contextmanager
def _switch(topic: str, batch_size: int = defaults.DEFAULT_INDEX_BATCH) -> Iterator[Switch]:
    """A Switch on the Airflow connections; every client closed whatever fails."""
    with contextlib.ExitStack() as clients:
        es = airflow_clients.elasticsearch()
        clients.callback(es.close)
        producer, _ = airflow_clients.kafka_producer()
        clients.callback(release_producer, producer)
        dead_letters = DeadLetters(producer, topic + defaults.DEAD_LETTER_SUFFIX)
        yield Switch(es, airflow_clients.kafka_consumer, dead_letters, batch_size)


def plan_run(action: str, alias: str, topic: str, group: str, run_id: str) -> dict[str, Any]:
    """The run's plan: a new version to fill (rebuild), or the version to go back to (rollback)."""
    with contextlib.closing(airflow_clients.elasticsearch()) as es:
        return plan(es, action, alias, topic, group, run_id).as_dict()


def fill(planned: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """Replay the topic into the target while the live indexer goes on."""
    p = Plan(**planned)
    with _switch(p.topic, batch_size) as switch:
        outcome = switch.fill(p)  # index_messages makes the dead-letter topic when missing
    return {"index": p.target, "group": p.replay_group, **outcome.as_dict()}


def verify(planned: dict[str, Any], catalog_file: str, batch_size: int) -> dict[str, Any]:
    """The target, caught up with what came since the fill, holds the published catalog (reindex.verify_version);
    raise naming what differs."""
    p = Plan(**planned)
    catalog_file = confine(catalog_file, "catalog_file")
    scratch = tempfile.TemporaryDirectory(prefix="verify-")
    with scratch, _switch(p.topic, batch_size) as switch:
        local = fetch_artifact(catalog_file, Path(scratch.name))
        switch.fill(p)
        result = verify_version(switch.es, p.target, read_products(local))
    return {"index": p.target, "catalog": catalog_file if catalog_file.startswith("s3://") else str(local), **result}


def swap(planned: dict[str, Any], verified: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """Catch up under the write block and move the alias (reindex.Switch.swap); only the version verified."""
    p = Plan(**planned)
    with _switch(p.topic, batch_size) as switch:
        return switch.swap(p, settings.value(settings.INDEX_VERSIONS_KEPT), verified.get("index"))


def discard(planned: dict[str, Any]) -> dict[str, Any]:
    """After the run: what a failed run leaves is removed (reindex.Switch.discard)."""
    p = Plan(**planned)
    with _switch(p.topic) as switch:
        return {"discarded": p.target if switch.discard(p) else None}
