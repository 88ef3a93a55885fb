"""A day with nothing to do runs two tasks: build_manifest and plan_batches, which finds nothing to upload, writes the
URL mapping and the catalog itself, and sees the topic holding that catalog with the indexer caught up; the tasks
after are skipped, their results under plan_batches' XCom `done_for`. Anything left to do (a catalog-only edit, an
indexer behind, a topic written by another, republish_all, a pending deletion) runs them as before."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from airflow.utils.session import create_session

from devstack import local_airflow, sample_data
from include.catalog_publisher import run_report
from tests.helpers import kafka_producer, make_kafka_topic, partition_ends, s3_client, write_catalog

PUBLISHER = "publish_product_images"


class Days:
    """One catalog, folder, bucket, topic and index, published and indexed run after run."""

    def __init__(self, stack, tmp_path: Path, **params) -> None:
        sample_data.generate(tmp_path, count=12, min_kb=2, max_kb=6)
        self.stack, self.catalog_file = stack, tmp_path / "products.json"
        self.products = json.loads(self.catalog_file.read_text())
        bucket, self.topic = f"quiet-{uuid.uuid4().hex[:8]}", f"quiet-{uuid.uuid4().hex[:8]}"
        s3_client(stack).create_bucket(Bucket=bucket)
        make_kafka_topic(stack.kafka_bootstrap, self.topic)
        self.index = f"quiet-{uuid.uuid4().hex[:8]}"
        self.conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(self.catalog_file)}
        self.conf |= {"bucket": bucket, "topic": self.topic, **params}

    def publish(self, **params) -> local_airflow.DagRunResult:
        run = local_airflow.run_dag(PUBLISHER, {**self.conf, **params})
        assert run.succeeded, run.task_states
        self.published = run.result("update_catalog")["catalog"]  # the rewritten catalog: what the index must hold
        return run

    def index_it(self) -> None:
        conf = {"topic": self.topic, "index": self.index, "catalog_file": self.published}
        indexed = local_airflow.run_dag("index_product_catalog", conf)
        assert indexed.succeeded, indexed.task_states


def ran(run: local_airflow.DagRunResult) -> list[str]:
    return sorted(task for task, states in run.task_states.items() if states != ["skipped"])


def test_a_quiet_day_runs_two_tasks_and_a_catalog_edit_is_still_published(stack, airflow_db, tmp_path):
    days = Days(stack, tmp_path)
    first = days.publish()
    assert first.result("publish_to_kafka")["published"] == len(days.products)
    days.index_it()
    ends = partition_ends(stack.kafka_bootstrap, days.topic)

    quiet = days.publish()
    assert ran(quiet) == ["build_manifest", "plan_batches"]
    assert sorted(quiet.done_for) == ["merge_url_mapping", "publish_to_kafka", "update_catalog"]
    published = quiet.result("publish_to_kafka")
    assert (published["published"], published["removed"], published["unchanged"]) == (0, 0, len(days.products))
    assert published["indexer_behind"] == 0
    assert quiet.result("merge_url_mapping")["skipped_images"] == first.result("merge_url_mapping")["uploaded_images"]
    catalog = quiet.result("update_catalog")
    assert (
        catalog["reused"]
        and Path(catalog["catalog"]).read_bytes() == Path(first.result("update_catalog")["catalog"]).read_bytes()
    )
    assert partition_ends(stack.kafka_bootstrap, days.topic) == ends  # nothing sent
    with create_session() as session:  # the run report counts the skipped tasks' results as theirs
        page = run_report.render(run_report.publish_report(run_report.load_run(session, PUBLISHER, quiet.run_id)))
    assert "<code>plan_batches</code> found the topic" in page and "Unchanged, not sent" in page

    edited = {**days.products[3], "price": 1234.5}
    write_catalog(days.catalog_file, [*days.products[:3], edited, *days.products[4:]])
    edit = days.publish()
    assert ran(edit) == ["build_manifest", "merge_url_mapping", "plan_batches", "publish_to_kafka", "update_catalog"]
    assert edit.task_states["upload_batch"] == ["skipped"] and not edit.done_for
    assert (edit.result("publish_to_kafka")["published"], edit.result("publish_to_kafka")["removed"]) == (1, 0)


def test_an_indexer_behind_the_topic_runs_the_publish_so_it_announces_again(stack, airflow_db, tmp_path):
    days = Days(stack, tmp_path)
    days.publish()  # not indexed: the indexer's group has committed nothing
    again = days.publish()
    assert "publish_to_kafka" in ran(again) and not again.done_for
    assert again.result("publish_to_kafka")["published"] == 0 and again.result("publish_to_kafka")["indexer_behind"]
    days.index_it()
    assert ran(days.publish()) == ["build_manifest", "plan_batches"]


def test_a_topic_written_by_another_or_republish_all_runs_the_publish(stack, airflow_db, tmp_path):
    days = Days(stack, tmp_path)
    days.publish()
    days.index_it()
    producer = kafka_producer(stack.kafka_bootstrap)
    producer.produce(days.topic, key=b"FOREIGN-1", value=json.dumps({"product_id": "FOREIGN-1"}).encode())
    producer.flush(10)
    days.index_it()  # the indexer has it all: only the topic having moved is left to see

    moved = days.publish()
    assert "publish_to_kafka" in ran(moved) and not moved.done_for
    assert moved.result("publish_to_kafka")["read_back"]  # the saved state was not trusted: the topic was read back
    assert moved.result("publish_to_kafka")["removed"] == 1  # the foreign product is not in the catalog

    days.index_it()
    replay = days.publish(republish_all=True)
    assert replay.result("publish_to_kafka")["published"] == len(days.products) and not replay.done_for


def test_a_pending_deletion_runs_the_delete_on_a_day_without_changes(stack, airflow_db, tmp_path):
    days = Days(stack, tmp_path, delete_removed_images=True)
    days.publish()
    days.index_it()
    gone = sorted((tmp_path / "images").iterdir())[0]
    gone.unlink()  # an image removed from the folder: its object is marked, then deleted on a later run
    marked = days.publish()
    assert marked.result("delete_removed_images")["pending"] == 1
    days.index_it()

    deleting = days.publish()
    assert "delete_removed_images" in ran(deleting) and deleting.result("delete_removed_images")["deleted"] == 1
    days.index_it()
    assert ran(days.publish()) == ["build_manifest", "plan_batches"]  # nothing pending, nothing unreferenced
