"""Hostile and bad input, against the real stack: an images folder with every awkward name, a tampered
manifest that points outside the images folder, and product ids that look like paths."""

from __future__ import annotations

import json
import os
import uuid
from urllib.parse import unquote

import pytest

from include.catalog_publisher import env_clients
from include.catalog_publisher.indexer import CONSUMER_SETTINGS, DeadLetters, index_messages, verify_catalog_indexed
from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, publish_products
from include.catalog_publisher.manifest import scan_images, write_manifest
from include.catalog_publisher.s3_store import S3Target, make_store
from include.catalog_publisher.upload import upload_images
from include.catalog_publisher.url_mapping import build_url_mapping
from tests.helpers import make_kafka_topic, write_image

LONG_NAME = "PROD-" + "é" * 121 + ".jpg"  # 251 bytes of UTF-8: within the 255-byte file name limit


@pytest.fixture
def hostile_folder(tmp_path):
    """Every awkward file the issue names, next to a secret image outside the folder."""
    outside = write_image(tmp_path / "outside" / "PROD-SECRET.jpg", seed=99)
    images = tmp_path / "images"
    write_image(images / "PROD spaces and (parens).jpg", seed=1)
    write_image(images / "PROD-ünïcödé-商品.png", "PNG", seed=2)
    write_image(images / LONG_NAME, seed=3)
    write_image(images / "PROD-%23hash+plus?.jpg", seed=4)
    (images / "PROD-EMPTY.jpg").write_bytes(b"")
    (images / "PROD-TEXT.jpg").write_text("not an image, whatever the extension says")
    (images / "PROD-SCRIPT.png").write_bytes(b"#!/bin/sh\necho pwned\n")
    (images / "PROD-LINK.jpg").symlink_to(outside)
    (images / "outside-dir").symlink_to(outside.parent, target_is_directory=True)
    write_image(images / "a" / "PROD-DUP.jpg", seed=5)
    write_image(images / "b" / "PROD-DUP.png", "PNG", seed=6)
    (images / os.fsdecode(b"PROD-\xff\xfe.jpg")).write_bytes((images / "a" / "PROD-DUP.jpg").read_bytes())
    write_image(images / ".hidden.jpg", seed=7)
    return images, outside


@pytest.mark.fault(
    "images folder with spaces, unicode, 251-byte and URL-special names, zero-byte files, non-images named .jpg/.png, "
    "symlinks out of the folder, duplicate product ids, a non-UTF-8 name, a hidden file",
    "the real images upload under safe keys with percent-encoded URLs; "
    "every other file is listed as skipped with its reason; nothing outside the folder is read",
)
def test_an_images_folder_of_awkward_names_uploads_exactly_the_real_images(stack, s3, bucket, hostile_folder, tmp_path):
    images, outside = hostile_folder
    summary = write_manifest(images, tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entries = list(scan_images(images))
    skipped = {os.path.basename(e["file_path"]): e["skipped"] for e in entries if "skipped" in e}
    uploaded_names = sorted(i["file_name"] for i in manifest["images"])

    assert uploaded_names == sorted(
        ["PROD spaces and (parens).jpg", "PROD-ünïcödé-商品.png", LONG_NAME, "PROD-%23hash+plus?.jpg", "PROD-DUP.jpg"]
    )
    assert summary.total_images == 5
    assert skipped["PROD-EMPTY.jpg"] == "empty file"
    assert skipped["PROD-TEXT.jpg"] == skipped["PROD-SCRIPT.png"] == "not an image (unrecognised file signature)"
    assert (
        skipped["PROD-LINK.jpg"]
        == skipped["outside-dir"]
        == "symlink, not followed; copy the real file into the images directory"
    )
    assert skipped["PROD-DUP.png"].startswith("duplicate image for product PROD-DUP")
    assert [n for n, why in skipped.items() if why == "file name is not valid UTF-8; rename the file"] == [
        "PROD-\\udcff\\udcfe.jpg"
    ]  # shown escaped
    assert skipped[".hidden.jpg"] == "hidden file"
    assert not any("SECRET" in json.dumps(e) for e in entries)

    target = S3Target(bucket, stack.s3_endpoint)
    results = upload_images(make_store(target), target, manifest["images"], manifest["images_dir"], "products")
    assert [r["status"] for r in results] == ["uploaded"] * 5
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"products/{name}" for name in uploaded_names)
    for image in manifest["images"]:
        assert (
            s3.get_object(Bucket=bucket, Key=f"products/{image['file_name']}")["Body"].read()
            == (images / image["relative_path"]).read_bytes()
        )
    mapping = build_url_mapping(results, target, "products")
    for pid, url in mapping["product_to_s3_url"].items():
        assert " " not in url and "?" not in url.split("/products/")[1] and "#" not in url
        assert unquote(url).endswith(
            f"/{bucket}/products/{next(i['file_name'] for i in manifest['images'] if i['product_id'] == pid)}"
        )


@pytest.mark.fault(
    "a tampered manifest: paths with ../, absolute paths, a file name with ../ or a slash",
    "each such image fails alone with 'leaves the images directory' / 'unsafe file name'; "
    "nothing outside the folder is read or uploaded; the rest upload",
)
def test_a_tampered_manifest_never_reads_or_writes_outside_its_place(stack, s3, bucket, hostile_folder, tmp_path):
    images, outside = hostile_folder
    write_manifest(images, tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    good = manifest["images"][0]
    size = outside.stat().st_size
    evil = [
        {
            **good,
            "product_id": "EVIL-1",
            "file_path": "../outside/PROD-SECRET.jpg",
            "relative_path": "../outside/PROD-SECRET.jpg",
            "file_size": size,
            "mtime_ns": None,
        },
        {
            **good,
            "product_id": "EVIL-2",
            "file_path": str(outside),
            "relative_path": str(outside),
            "file_size": size,
            "mtime_ns": None,
        },
        {**good, "product_id": "EVIL-3", "file_name": "../../escaped.jpg"},
        {**good, "product_id": "EVIL-4", "file_name": "nested/key.jpg"},
    ]
    target = S3Target(bucket, stack.s3_endpoint)
    results = upload_images(make_store(target), target, [good, *evil], manifest["images_dir"], "products")

    assert results[0]["status"] == "uploaded"
    reasons = {r["product_id"]: r.get("error", "") for r in results[1:]}
    assert all(r["status"] == "failed" and not r["retryable"] for r in results[1:])
    assert (
        "path leaves the images directory" in reasons["EVIL-1"]
        and "path leaves the images directory" in reasons["EVIL-2"]
    )
    assert "unsafe file name" in reasons["EVIL-3"] and "unsafe file name" in reasons["EVIL-4"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"products/{good['file_name']}"]


@pytest.mark.fault(
    "product ids that look like paths or are unicode ('../../etc/passwd', 'a/b', 'ünï 商品'), "
    "through Kafka and Elasticsearch",
    "each is a message key and a document id as it is, found again by id; nothing is taken as a path",
)
def test_path_like_and_unicode_product_ids_are_just_ids(stack):
    topic = make_kafka_topic(stack.kafka_bootstrap, f"hostile-{uuid.uuid4().hex[:8]}")
    index = f"hostile-{uuid.uuid4().hex[:8]}"
    products = [
        {"product_id": pid, "image_url": "https://b/x.jpg"}
        for pid in ("../../etc/passwd", "a/b", "ünï 商品", "?q=1&x=%2F")
    ]
    from confluent_kafka import Consumer, Producer

    publish_products(Producer({"bootstrap.servers": stack.kafka_bootstrap, **PRODUCER_SETTINGS}), products, topic)
    es = env_clients.elasticsearch(stack.elasticsearch_url)
    consumer = Consumer(
        {"bootstrap.servers": stack.kafka_bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}", **CONSUMER_SETTINGS}
    )
    dead = DeadLetters(Producer({"bootstrap.servers": stack.kafka_bootstrap, **PRODUCER_SETTINGS}), topic + ".dlq")
    make_kafka_topic(stack.kafka_bootstrap, topic + ".dlq")
    outcome = index_messages(consumer, es, topic, index, dead)
    consumer.close()
    assert outcome.indexed == 4 and outcome.dead_lettered == 0
    assert verify_catalog_indexed(es, index, products)["verified"] == 4
    for product in products:
        assert es.get(index=index, id=product["product_id"])["_source"]["product_id"] == product["product_id"]


# -- params that point outside the allowed inputs (PUBLISHER_ALLOWED_INPUTS, default the project home's data/)


@pytest.fixture
def confined(tmp_path, monkeypatch):
    """A project home with data/images and data/products.json, a deployment's default limit, and a secret outside."""
    home = tmp_path / "home"
    write_image(home / "data" / "images" / "PROD-1.jpg")
    (home / "data" / "products.json").write_text(json.dumps([{"product_id": "PROD-1"}]))
    secret = tmp_path / "secret"
    write_image(secret / "PROD-SECRET.jpg")
    (secret / "passwords.json").write_text(json.dumps([{"product_id": "root", "password": "hunter2"}]))
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(home))
    monkeypatch.delenv("PUBLISHER_ALLOWED_INPUTS")
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    return home, secret


def _refused(param: str) -> str:
    refused = rf"{param} .* is outside the allowed inputs \(.*/home/data.*\)"
    return refused + r"; .* add its folder or s3://bucket to PUBLISHER_ALLOWED_INPUTS"


@pytest.mark.fault(
    "images_dir outside the allowed inputs: an absolute path, a relative one climbing out with '..', a symlink",
    "build_manifest fails at once naming images_dir, the allowed folders and PUBLISHER_ALLOWED_INPUTS",
)
@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_an_images_dir_outside_the_allowed_inputs_is_refused(confined, how):
    from include.catalog_publisher import publisher_tasks
    from include.catalog_publisher.errors import PublisherError
    from include.catalog_publisher.run_artifacts import RunArtifacts

    home, secret = confined
    if how == "symlink":
        (home / "data" / "linked").symlink_to(secret, target_is_directory=True)
    value = {"absolute": str(secret), "dotdot": "data/../../secret", "symlink": "data/linked"}[how]
    run = RunArtifacts("publish_product_images", f"outside-{how}")
    with pytest.raises(PublisherError, match=_refused("images_dir")):
        publisher_tasks.build_manifest(run, value, "flat", None, None)
    assert not run.manifest.exists()


def test_the_default_images_dir_and_catalog_are_inside_the_default_limit(confined):
    from include.catalog_publisher.allowed_inputs import confine

    home, _ = confined
    assert confine("data/images", "images_dir") == str(home / "data" / "images")
    assert confine(str(home / "data" / "products.json"), "catalog_file") == str(home / "data" / "products.json")


@pytest.mark.fault(
    "catalog_file outside the allowed inputs (both DAGs): a worker-local JSON file, an object in another bucket",
    "update_catalog / verify_index fail at once naming catalog_file and PUBLISHER_ALLOWED_INPUTS; nothing read",
)
def test_a_catalog_outside_the_allowed_inputs_is_refused_by_both_dags(confined, stack, s3, bucket, monkeypatch):
    from include.catalog_publisher import indexer_tasks, publisher_tasks
    from include.catalog_publisher.errors import PublisherError
    from include.catalog_publisher.run_artifacts import RunArtifacts

    home, secret = confined
    run = RunArtifacts("publish_product_images", "outside-catalog")
    run.url_mapping.parent.mkdir(parents=True)
    run.url_mapping.write_text(json.dumps({"product_to_s3_url": {}}))
    mapping = {"url_mapping": str(run.url_mapping)}
    s3.put_object(Bucket=bucket, Key="exports/products.json", Body=b'[{"product_id": "other"}]')

    for value in (str(secret / "passwords.json"), f"s3://{bucket}/exports/products.json"):
        with pytest.raises(PublisherError, match=_refused("catalog_file")):
            publisher_tasks.update_catalog(run, value, mapping, {"date_folders": ""})
        with pytest.raises(PublisherError, match=_refused("catalog_file")):
            indexer_tasks.verify_index("products", value)
    assert not run.catalog.exists() and not (run.dir / "inputs").exists()


@pytest.mark.fault(
    "catalog_file in the artifact bucket (PUBLISHER_ARTIFACTS_URL) or a bucket listed in PUBLISHER_ALLOWED_INPUTS",
    "allowed and read; a key under another prefix of a listed s3://bucket/prefix is refused",
)
def test_a_catalog_in_the_artifact_bucket_or_a_listed_bucket_is_allowed(confined, stack, s3, bucket, monkeypatch):
    from include.catalog_publisher.allowed_inputs import confine
    from include.catalog_publisher.errors import PublisherError

    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", f"s3://{bucket}/runs")
    assert confine(f"s3://{bucket}/inputs/products.json", "catalog_file") == f"s3://{bucket}/inputs/products.json"
    monkeypatch.setenv("PUBLISHER_ALLOWED_INPUTS", "data,s3://shared-exports/catalogs")
    listed = "s3://shared-exports/catalogs/today.json"
    assert confine(listed, "catalog_file") == listed
    with pytest.raises(PublisherError, match=_refused("catalog_file")):
        confine("s3://shared-exports/private/today.json", "catalog_file")


@pytest.mark.fault(
    "PUBLISHER_ALLOWED_INPUTS with an entry that is neither a folder nor s3://bucket[/prefix]",
    "one error naming the setting and the entry",
)
def test_a_malformed_allowed_inputs_setting_is_named(confined, monkeypatch):
    from include.catalog_publisher.allowed_inputs import confine
    from include.catalog_publisher.errors import PublisherError

    monkeypatch.setenv("PUBLISHER_ALLOWED_INPUTS", "data,https://example.com/catalogs")
    expected = (
        r"PUBLISHER_ALLOWED_INPUTS='data,https://example.com/catalogs' is not a list of folders and "
        r"s3://bucket\[/prefix\] locations \('https://example.com/catalogs' is neither\); "
        r"fix it or unset it \(default: data\)"
    )
    with pytest.raises(PublisherError, match=expected):
        confine("data/products.json", "catalog_file")
