"""index_product_catalog after publish_product_images, with dag.test() on the real stack."""

from __future__ import annotations

import uuid

from devstack import local_airflow
from include.catalog_publisher import env_clients
from include.catalog_publisher.catalog import read_products


def index_conf(published, index, group):
    catalog = published["run"].xcoms["update_catalog"]["catalog"]  # this run's own copy
    return {"topic": published["topic"], "index": index, "group_id": group, "catalog_file": catalog}


def test_one_document_per_catalog_product_with_its_s3_url_and_reindexing_changes_no_count(published, stack):
    assert published["run"].succeeded
    index = f"dag-{uuid.uuid4().hex[:8]}"
    conf = index_conf(published, index, f"g-{uuid.uuid4().hex[:6]}")
    run = local_airflow.run_dag("index_product_catalog", conf)

    assert run.succeeded, run.task_states
    catalog = list(read_products(conf["catalog_file"]))
    es = env_clients.elasticsearch(stack.elasticsearch_url)
    assert es.count(index=index)["count"] == len(catalog) == run.xcoms["verify_index"]["verified"]
    with_images = [
        p for p in catalog if p.get("image_url", "").startswith(f"{stack.s3_endpoint}/{published['bucket']}/products/")
    ]
    assert len(with_images) == published["run"].xcoms["update_catalog"]["updated"] > 0
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
