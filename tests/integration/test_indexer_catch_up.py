"""The indexer catches up whenever it is behind the topic: a publish announces (an asset event on the topic) not
only what it sent but also while the indexer's consumer group has not consumed the topic, so messages whose
announcement went nowhere are indexed after a later run. Two ways that happens: the event found the indexer
paused (Airflow queues no run for a paused DAG), or publish_to_kafka's first try sent the messages and failed
before its event, so its retry found nothing to send. Both leave what this test makes: messages on the topic,
no indexer run, and a publish with nothing new to send."""

from __future__ import annotations

import uuid

from devstack import local_airflow, sample_data
from include.catalog_publisher.assets import topic_asset
from tests.helpers import make_kafka_topic, s3_client


def topic_events(topic: str) -> list[dict]:
    """The asset events of the topic, oldest first, as their extras."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    uri = topic_asset(topic).uri
    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.uri == uri)
        return [event.extra for event in session.scalars(query.order_by(AssetEvent.id))]


def test_a_publish_with_nothing_to_send_announces_while_the_indexer_is_behind_and_not_after(
    stack, airflow_db, tmp_path
):
    sample_data.generate(tmp_path, count=6, min_kb=2, max_kb=6)
    topic, index = f"behind-{uuid.uuid4().hex[:8]}", f"behind-{uuid.uuid4().hex[:8]}"
    make_kafka_topic(stack.kafka_bootstrap, topic)
    s3_client(stack).create_bucket(Bucket=(bucket := f"behind-{uuid.uuid4().hex[:8]}"))
    conf = {
        "images_dir": str(tmp_path / "images"),
        "catalog_file": str(tmp_path / "products.json"),
        "bucket": bucket,
        "topic": topic,
    }

    first = local_airflow.run_dag("publish_product_images", conf)
    assert first.succeeded, first.task_states
    sent = first.result("publish_to_kafka")
    assert sent["published"] == 6 and sent["indexer_behind"] > 0  # nothing has indexed the topic yet
    assert len(topic_events(topic)) == 1

    # Nothing changed, and nobody indexed: the run announces again, naming how far the indexer is behind.
    again = local_airflow.run_dag("publish_product_images", conf)
    assert again.succeeded, again.task_states
    nothing = again.result("publish_to_kafka")
    assert (nothing["published"], nothing["removed"]) == (0, 0) and nothing["indexer_behind"] == sent["indexer_behind"]
    events = topic_events(topic)
    assert len(events) == 2 and (events[1]["products"], events[1]["indexer_behind"]) == (0, nothing["indexer_behind"])

    catalog = again.result("update_catalog")["catalog"]
    indexed = local_airflow.run_dag("index_product_catalog", {"topic": topic, "index": index, "catalog_file": catalog})
    assert indexed.succeeded, indexed.task_states
    assert indexed.xcoms["verify_index"]["verified"] == 6

    # Caught up: an unchanged run announces nothing.
    caught_up = local_airflow.run_dag("publish_product_images", conf)
    assert caught_up.succeeded and caught_up.result("publish_to_kafka")["indexer_behind"] == 0
    assert len(topic_events(topic)) == 2
