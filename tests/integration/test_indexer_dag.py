"""index_product_catalog after publish_product_images, with dag.test() on the real stack."""

from __future__ import annotations

import uuid

from devstack import local_airflow
from include.catalog_publisher import env_clients
from include.catalog_publisher.catalog import read_products


def index_conf(published, index, group):
    catalog = published["run"].result("update_catalog")["catalog"]  # this run's own copy
    return {"topic": published["topic"], "index": index, "group_id": group, "catalog_file": catalog}


def test_one_document_per_catalog_product_with_its_s3_url_and_reindexing_changes_no_count(published, stack):
    assert published["run"].succeeded
    index = f"dag-{uuid.uuid4().hex[:8]}"
    conf = index_conf(published, index, f"g-{uuid.uuid4().hex[:6]}")
    run = local_airflow.run_dag("index_product_catalog", conf)

    assert run.succeeded, run.task_states
    assert run.xcoms["verify_index"]["mapping_drift"] == []  # the index it created has the code's mapping
    catalog = list(read_products(conf["catalog_file"]))
    es = env_clients.elasticsearch(stack.elasticsearch_url)
    assert es.count(index=index)["count"] == len(catalog) == run.xcoms["verify_index"]["verified"]
    with_images = [
        p for p in catalog if p.get("image_url", "").startswith(f"{stack.s3_endpoint}/{published['bucket']}/products/")
    ]
    assert len(with_images) == published["run"].result("update_catalog")["updated"] > 0
    for product in catalog:
        assert es.get(index=index, id=product["product_id"])["_source"] == product  # S3 image_url and every other field

    # The same messages again, through a new consumer group: every message is read, no count changes.
    again = local_airflow.run_dag("index_product_catalog", {**conf, "group_id": f"g-{uuid.uuid4().hex[:6]}"})
    assert again.succeeded
    assert again.xcoms["indexing_totals"]["consumed"] == len(catalog)
    assert es.count(index=index)["count"] == len(catalog)

    # The first group's offsets were committed: running it again reads nothing new.
    resumed = local_airflow.run_dag("index_product_catalog", conf)
    assert resumed.succeeded and resumed.xcoms["indexing_totals"]["consumed"] == 0


def test_an_index_whose_mapping_is_not_the_codes_is_reported_by_the_run_and_its_report(published, stack):
    """Someone created the index by hand (price a long, name a keyword without its sub-field): the run still
    indexes and verifies, and its result, log and run report say which fields differ and what fixes it."""
    from airflow.utils.session import create_session

    from include.catalog_publisher import run_report

    index = f"drift-{uuid.uuid4().hex[:8]}"
    es = env_clients.elasticsearch(stack.elasticsearch_url)
    try:
        mappings = {"properties": {"price": {"type": "long"}, "name": {"type": "keyword"}}}
        es.indices.create(index=index, mappings=mappings)
    finally:
        es.close()
    run = local_airflow.run_dag("index_product_catalog", index_conf(published, index, f"g-{uuid.uuid4().hex[:6]}"))
    assert run.succeeded, run.task_states
    drift = run.xcoms["verify_index"]["mapping_drift"]
    assert f"price: double in the code, long in {index}" in drift
    assert f"name: text (keyword: keyword) in the code, keyword in {index}" in drift
    with create_session() as session:
        report = run_report.index_report(run_report.load_run(session, "index_product_catalog", run.run_id))
    (problem,) = report.problems
    assert f"The mapping of index {index} differs in {len(drift)} fields" in problem
    assert "trigger rebuild_product_index" in problem
    assert f"price: double in the code, long in {index}" in run_report.render(report)
