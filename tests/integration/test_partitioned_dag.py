"""Date-partitioned images under dag.test(): a manual run uploads the last complete day before its logical date, or
the day its `day` param names, and publishes the whole catalog, each product with its newest image uploaded so far."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from devstack import local_airflow
from include.catalog_publisher import env_clients
from tests.helpers import make_kafka_topic, read_topic, s3_client, write_catalog, write_image

DAYS = {
    "2025-06-01": ["PROD-A1", "PROD-A2"],
    "2025-06-02": ["PROD-B1", "PROD-B2", "PROD-B3"],
    "2025-06-03": ["PROD-C1"],
}


def daily_data(stack, folder: Path) -> dict:
    """Three date folders and their catalog, a fresh bucket and topic; the conf that publishes them."""
    for day, ids in DAYS.items():
        for i, pid in enumerate(ids):
            write_image(folder / "images" / day / f"{pid}.jpg", seed=i)
    products = [{"product_id": p, "name": p, "image_url": f"data/images/{p}.jpg"} for ids in DAYS.values() for p in ids]
    write_catalog(folder / "products.json", products)
    bucket = f"day-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"day-{uuid.uuid4().hex[:8]}")
    return {
        "images_dir": str(folder / "images"),
        "catalog_file": str(folder / "products.json"),
        "bucket": bucket,
        "topic": topic,
    }


def test_a_manual_run_uploads_the_day_before_its_logical_date_and_publishes_the_catalog(
    stack, airflow_db, tmp_path, s3
):
    conf = daily_data(stack, tmp_path)
    bucket, topic = conf["bucket"], conf["topic"]

    # A logical date of 06-03 10:00 (the UI's default is "now") has the data interval [06-02, 06-03).
    run = local_airflow.run_dag("publish_product_images", conf, logical_date=datetime(2025, 6, 3, 10, tzinfo=UTC))

    assert run.succeeded, run.task_states
    assert run.xcoms["build_manifest"][0]["date_folders"] == "2025-06-02"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"products/2025-06-02/{pid}.jpg" for pid in DAYS["2025-06-02"]]  # under its day
    catalog = {p["product_id"]: p for p in json.loads(Path(run.result("update_catalog")["catalog"]).read_text())}
    assert sorted(catalog) == sorted(p for ids in DAYS.values() for p in ids)  # the whole catalog
    for pid in DAYS["2025-06-02"]:
        assert catalog[pid]["image_url"].startswith(f"{stack.s3_endpoint}/{bucket}/products/2025-06-02/")
        assert catalog[pid]["image_date"] == "2025-06-02"  # the version the index keeps the newest of
    for pid in DAYS["2025-06-01"] + DAYS["2025-06-03"]:  # no image uploaded yet: as the catalog has them
        assert catalog[pid]["image_url"] == f"data/images/{pid}.jpg" and "image_date" not in catalog[pid]
    assert run.result("update_catalog")["products_without_image"] == 3
    assert sorted(k for k, _ in read_topic(stack.kafka_bootstrap, topic)) == sorted(catalog)


def test_the_day_param_picks_the_folder_whatever_the_logical_date(stack, airflow_db, tmp_path, s3):
    conf = daily_data(stack, tmp_path) | {"day": "2025-06-01"}

    run = local_airflow.run_dag("publish_product_images", conf)  # logical date: now

    assert run.succeeded, run.task_states
    assert run.xcoms["build_manifest"][0]["date_folders"] == "2025-06-01"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=conf["bucket"])["Contents"])
    assert keys == ["products/2025-06-01/PROD-A1.jpg", "products/2025-06-01/PROD-A2.jpg"]
    live = dict(read_topic(stack.kafka_bootstrap, conf["topic"]))
    assert {pid for pid, doc in live.items() if doc.get("image_date")} == set(DAYS["2025-06-01"])


def test_a_day_without_a_folder_uploads_nothing_and_still_publishes_the_catalog(stack, airflow_db, tmp_path):
    """A day with no images is an ordinary day: nothing to upload, but a catalog edit made that day is published."""
    write_image(tmp_path / "images" / "2025-06-01" / "PROD-A1.jpg")
    write_catalog(tmp_path / "products.json", [{"product_id": "PROD-A1", "price": 10}])
    topic = make_kafka_topic(stack.kafka_bootstrap, f"empty-{uuid.uuid4().hex[:8]}")
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(tmp_path / "products.json")}
    conf |= {"bucket": f"empty-{uuid.uuid4().hex[:8]}", "topic": topic}
    s3_client(stack).create_bucket(Bucket=conf["bucket"])
    first = local_airflow.run_dag("publish_product_images", conf, logical_date=datetime(2025, 6, 2, tzinfo=UTC))
    assert first.succeeded, first.task_states  # 06-01: PROD-A1 with its image
    write_catalog(tmp_path / "products.json", [{"product_id": "PROD-A1", "price": 12}])

    run = local_airflow.run_dag("publish_product_images", conf, logical_date=datetime(2025, 7, 2, tzinfo=UTC))  # 07-01

    assert run.succeeded, run.task_states
    assert run.xcoms["build_manifest"][0]["images"] == 0
    assert run.task_states["upload_batch"] == ["skipped"]
    assert run.result("publish_to_kafka")["published"] == 1
    live = dict(read_topic(stack.kafka_bootstrap, topic))["PROD-A1"]
    assert live["price"] == 12 and live["image_date"] == "2025-06-01"  # the edit, with the image it had


def test_a_backfill_of_an_older_day_never_puts_its_image_back_live(stack, airflow_db, tmp_path, s3):
    """PROD-X has an image on 06-01 and a newer one on 06-04. Published and indexed newest first (a backfill
    after the daily runs, or `backfill create --run-backwards`), the older day leaves the newer image live:
    each day has its own key, and the index keeps the newest day's document (external version)."""
    older, newer = tmp_path / "images" / "2025-06-01" / "PROD-X.jpg", tmp_path / "images" / "2025-06-04" / "PROD-X.jpg"
    write_image(older, seed=1)
    write_image(newer, seed=2)
    write_catalog(tmp_path / "products.json", [{"product_id": "PROD-X", "name": "Lamp"}])
    bucket, index = f"hist-{uuid.uuid4().hex[:8]}", f"hist-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"hist-{uuid.uuid4().hex[:8]}")
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(tmp_path / "products.json")}
    conf |= {"bucket": bucket, "topic": topic, "force_reupload": True}  # as a backfill that re-uploads history

    indexed, publishes = [], []
    for day in ("2025-06-04", "2025-06-01"):
        published = local_airflow.run_dag("publish_product_images", conf | {"day": day})
        assert published.succeeded, published.task_states
        publishes.append(published.result("publish_to_kafka"))
        catalog = published.result("update_catalog")["catalog"]
        run = local_airflow.run_dag("index_product_catalog", {"topic": topic, "index": index, "catalog_file": catalog})
        assert run.succeeded, run.task_states  # the older day's catalog verifies too
        indexed.append(run.xcoms)

    live = env_clients.elasticsearch(stack.elasticsearch_url).get(index=index, id="PROD-X")
    assert live["_source"]["image_date"] == "2025-06-04" and live["_version"] == 20250604
    key = live["_source"]["image_url"].split(f"/{bucket}/", 1)[1]
    assert key == "products/2025-06-04/PROD-X.jpg"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == newer.read_bytes()  # the bytes the URL serves
    assert s3.get_object(Bucket=bucket, Key="products/2025-06-01/PROD-X.jpg")["Body"].read() == older.read_bytes()
    # The older day's run gives the product its newest image, which is live: nothing to send (a replay never regresses).
    assert (publishes[1]["published"], publishes[1]["unchanged"]) == (0, 1)
    assert [v["image_date"] for k, v in read_topic(stack.kafka_bootstrap, topic)] == ["2025-06-04"]
    assert "superseded" not in indexed[1]["verify_index"]  # its catalog has the newest image: nothing older in it


def test_a_dated_run_removes_products_gone_from_the_catalog_and_leaves_unchanged_ones_alone(
    stack, airflow_db, tmp_path
):
    """The catalog file is the whole catalog in every run: a dated run publishes the products whose document changed
    (here the day's products, which got their image), sends a tombstone for a published product the catalog no longer
    has, and leaves the others as they are on the topic."""
    conf = daily_data(stack, tmp_path)
    first = local_airflow.run_dag("publish_product_images", conf | {"day": "2025-06-01"})
    assert first.succeeded and first.result("publish_to_kafka")["published"] == 6  # the catalog, A1 and A2 with images
    products = json.loads((tmp_path / "products.json").read_text())
    write_catalog(tmp_path / "products.json", [p for p in products if p["product_id"] != "PROD-A2"])

    second = local_airflow.run_dag("publish_product_images", conf | {"day": "2025-06-02"})

    assert second.succeeded, second.task_states
    assert (second.result("publish_to_kafka")["published"], second.result("publish_to_kafka")["removed"]) == (3, 1)
    live = {}
    for key, value in read_topic(stack.kafka_bootstrap, conf["topic"]):
        live[key] = value
    assert {k for k, v in live.items() if v is not None} == {"PROD-A1", *DAYS["2025-06-02"], "PROD-C1"}
    assert "PROD-A2" in live and live["PROD-A2"] is None  # the tombstone
