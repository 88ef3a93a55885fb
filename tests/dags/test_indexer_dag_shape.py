"""The indexer's shape: scheduled on the alias the publisher attaches each topic's asset to, mapped consumers."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import ParamValidationError

from include.catalog_publisher.assets import PUBLISHED_TOPICS, topic_asset


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    from include.catalog_publisher.defaults import project_root

    bag = DagBag(dag_folder=str(project_root() / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def test_the_publish_attaches_its_topics_asset_to_the_alias_the_indexer_is_scheduled_on(dagbag):
    """A topic is a param, so its asset is named at run time: a fixed `products` asset would be wrong for any other."""
    publish = dagbag.dags["publish_product_images"].get_task("publish_to_kafka")
    assert publish.outlets == [PUBLISHED_TOPICS]
    indexer = dagbag.dags["index_product_catalog"]
    assert list(indexer.timetable.asset_condition.objects) == [PUBLISHED_TOPICS]
    assert topic_asset("shoes").uri == "kafka://kafka_default/shoes" and topic_asset("shoes") != topic_asset("products")


def test_consumers_are_mapped_between_planning_and_verification(dagbag):
    """Totals keep the single `indexing_totals` result the demo and the run report read."""
    dag = dagbag.dags["index_product_catalog"]
    edges = {(task.task_id, downstream) for task in dag.tasks for downstream in task.downstream_task_ids}
    chain = ["plan_consumers", "index_partitions", "indexing_totals", "verify_index"]
    assert edges == set(zip(chain, chain[1:], strict=False))
    assert dag.get_task("index_partitions").is_mapped
    assert dag.max_active_runs == 1
    consumers = dag.params.get_param("consumers")
    assert consumers.resolve() == 1  # one consumer unless asked for more
    assert consumers.resolve(None) is None  # empty: one per partition
    assert consumers.resolve(2) == 2
    with pytest.raises(ParamValidationError, match="less than the minimum of 1"):
        consumers.resolve(0)
