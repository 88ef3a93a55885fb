"""Images read from a landing bucket (images_dir = s3://bucket/prefix), against real SeaweedFS: the scan from the
listing, the server-side copy (and the streamed relay through another connection), and whole publisher runs under
dag.test()."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from devstack import local_airflow
from include.catalog_publisher import bucket_images, env_clients
from include.catalog_publisher.bucket_images import BucketLocation, BucketSource
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import iter_manifest_images, previous_entries, write_manifest
from include.catalog_publisher.s3_store import S3Target, make_store
from include.catalog_publisher.upload import upload_images
from tests.helpers import image_bytes, write_catalog

OCTETS = "binary/octet-stream"  # what a landing bucket's uploader often leaves: the copy must not keep it


def fill(s3, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=OCTETS)


@pytest.fixture
def landing(s3, monkeypatch) -> str:
    """A fresh landing bucket whose in/ prefix runs may read (and only that prefix)."""
    name = f"landing-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    monkeypatch.setenv("PUBLISHER_ALLOWED_INPUTS", f"{os.environ['PUBLISHER_ALLOWED_INPUTS']},s3://{name}/in")
    return name


def reader(bucket: str, prefix: str = "in") -> bucket_images.BucketReader:
    return env_clients.bucket_reader(f"s3://{bucket}/{prefix}")


def test_a_run_from_a_landing_bucket_copies_each_image_with_the_type_its_bytes_say(
    stack, airflow_db, s3, landing, bucket, tmp_path
):
    images = {f"in/P{i}.jpg": image_bytes(seed=i) for i in range(5)}
    images["in/summer/P9.png"] = image_bytes("PNG", seed=9)
    fill(s3, landing, images)
    fill(s3, landing, {"in/P7.jpg": b"a text file with an image's name", "in/.DS_Store": b"x"})
    fill(s3, landing, {"in/.thumbs/P0.jpg": image_bytes(seed=99), "in/summer/": b""})  # hidden folder, folder marker
    fill(s3, landing, {"elsewhere/P8.jpg": image_bytes(seed=8)})  # outside the prefix
    catalog = write_catalog(tmp_path / "products.json", [{"product_id": f"P{i}"} for i in (0, 1, 2, 3, 4, 9)])
    conf = {"images_dir": f"s3://{landing}/in/", "catalog_file": str(catalog), "bucket": bucket}
    conf["topic"] = f"bucket-{uuid.uuid4().hex[:8]}"

    run = local_airflow.run_dag("publish_product_images", conf)
    assert run.succeeded, run.task_states
    manifest = run.xcoms["build_manifest"][0]
    assert (manifest["images_dir"], manifest["images"], manifest["skipped_files"]) == (f"s3://{landing}/in", 6, 2)
    for key, body in images.items():
        copied = s3.get_object(Bucket=bucket, Key=f"products/{key.rsplit('/', 1)[1]}")
        assert copied["Body"].read() == body, key
        assert copied["ContentType"] == ("image/png" if key.endswith(".png") else "image/jpeg")
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="products/")["Contents"]}
    assert listed == {f"products/{key.rsplit('/', 1)[1]}" for key in images}
    mapping = run.result("merge_url_mapping")
    assert (mapping["uploaded_images"], mapping["skipped_images"], mapping["failed_images"]) == (6, 0, 0)

    again = local_airflow.run_dag("publish_product_images", conf)
    assert again.succeeded, again.task_states
    assert again.task_states["upload_batch"] == ["skipped"]  # every copy unchanged in the bucket
    assert again.result("merge_url_mapping")["skipped_images"] == 6


def test_date_prefixes_are_date_folders_and_the_day_takes_its_own(stack, airflow_db, s3, landing, bucket, tmp_path):
    fill(s3, landing, {"in/2025-06-01/A.jpg": image_bytes(seed=1), "in/2025-06-01/B.jpg": image_bytes(seed=2)})
    fill(s3, landing, {"in/2025-06-02/A.jpg": image_bytes(seed=3)})
    catalog = write_catalog(tmp_path / "products.json", [{"product_id": "A"}, {"product_id": "B"}])
    conf = {"images_dir": f"s3://{landing}/in", "catalog_file": str(catalog), "bucket": bucket}
    conf["topic"] = f"bucket-{uuid.uuid4().hex[:8]}"
    for day in ("2025-06-01", "2025-06-02"):
        run = local_airflow.run_dag("publish_product_images", conf | {"day": day})
        assert run.succeeded, run.task_states
    assert run.xcoms["build_manifest"][0]["date_folders"] == "2025-06-02"
    published = Path(os.environ["CATALOG_PUBLISHER_HOME"]) / "data" / "products_with_s3_urls.json"
    urls = {p["product_id"]: p["image_url"].split(f"/{bucket}/", 1)[1] for p in json.loads(published.read_text())}
    assert urls == {"A": "products/2025-06-02/A.jpg", "B": "products/2025-06-01/B.jpg"}

    flat = local_airflow.run_dag("publish_product_images", conf | {"images_layout": "flat"})
    assert not flat.succeeded and flat.task_states["build_manifest"] == ["failed"]


def test_the_scan_reads_only_the_objects_the_last_manifest_does_not_describe(s3, landing, tmp_path, monkeypatch):
    fill(s3, landing, {f"in/P{i}.jpg": image_bytes(seed=i) for i in range(12)})
    reads: list[str] = []
    real_read = bucket_images._read

    async def counted(store, key):  # a spy: the real read, counted
        reads.append(key)
        return await real_read(store, key)

    monkeypatch.setattr(bucket_images, "_read", counted)
    fill(s3, landing, {"in/.DS_Store": b"x", "in/.hidden.jpg": image_bytes(seed=50)})  # skipped: never read
    where, manifest = reader(landing), tmp_path / "manifest.json"
    write_manifest(where.location.url, manifest, bucket=where)
    assert len(reads) == 12 and not any("/." in key for key in reads)
    first = {image["product_id"]: image for image in iter_manifest_images(manifest)}
    assert first["P3"]["sha256"] == hashlib.sha256(image_bytes(seed=3)).hexdigest()
    assert base64.b64decode(first["P3"]["md5"]).hex() == first["P3"]["e_tag"]

    reads.clear()
    write_manifest(where.location.url, manifest, known=previous_entries(manifest, where.location.url), bucket=where)
    assert reads == []
    fill(s3, landing, {"in/P3.jpg": image_bytes(seed=33)})
    write_manifest(where.location.url, manifest, known=previous_entries(manifest, where.location.url), bucket=where)
    assert reads == ["in/P3.jpg"]
    assert (
        next(i for i in iter_manifest_images(manifest) if i["product_id"] == "P3")["sha256"]
        == hashlib.sha256(image_bytes(seed=33)).hexdigest()
    )


def _destination(stack, bucket: str):
    target = S3Target(bucket, stack.s3_endpoint, "us-east-1")
    return target, make_store(target)


def _scanned(landing: str, tmp_path: Path) -> list[dict]:
    where = reader(landing)
    write_manifest(where.location.url, tmp_path / "manifest.json", bucket=where)
    return list(iter_manifest_images(tmp_path / "manifest.json"))


def _source(location: BucketLocation, how: str) -> BucketSource:
    """The landing bucket as the upload reads it: copied by the destination's client, or relayed through a store of
    its own (as another connection would be)."""
    if how == "server-side copy":
        return BucketSource(location, copy_client=env_clients.s3_client())
    return BucketSource(location, store=env_clients.s3_store(location.bucket)[1])


LARGE = 17 * 1024 * 1024  # above the multipart threshold: a copy in parts (UploadPartCopy), a relay in parts


@pytest.mark.parametrize("how", ["server-side copy", "relay through another connection"])
def test_both_ways_publish_the_exact_bytes_small_and_large(stack, s3, landing, bucket, tmp_path, how):
    large = image_bytes(seed=5) + os.urandom(LARGE)
    fill(s3, landing, {"in/SMALL.jpg": image_bytes(seed=4), "in/LARGE.jpg": large})
    images = _scanned(landing, tmp_path)
    location = BucketLocation(landing, "in")
    source = _source(location, how)
    target, store = _destination(stack, bucket)
    results = upload_images(store, target, images, location.url, "products", source=source)
    assert {r["status"] for r in results} == {"uploaded"}, results
    assert s3.get_object(Bucket=bucket, Key="products/LARGE.jpg")["Body"].read() == large
    small = s3.get_object(Bucket=bucket, Key="products/SMALL.jpg")
    assert small["Body"].read() == image_bytes(seed=4) and small["ContentType"] == "image/jpeg"


@pytest.mark.fault(
    "an object of the landing bucket rewritten between the manifest and its upload",
    "that image fails alone, 'object changed since the manifest was built; rebuild the manifest' (the copy is "
    "conditional on the scanned ETag, the relay's GET too): the rewritten object is not copied",
)
@pytest.mark.parametrize("how", ["server-side copy", "relay through another connection"])
def test_an_object_rewritten_after_the_manifest_fails_alone(stack, s3, landing, bucket, tmp_path, how):
    fill(s3, landing, {"in/KEPT.jpg": image_bytes(seed=1), "in/REWRITTEN.jpg": image_bytes(seed=2)})
    images = _scanned(landing, tmp_path)
    fill(s3, landing, {"in/REWRITTEN.jpg": image_bytes(seed=3)})
    location = BucketLocation(landing, "in")
    source = _source(location, how)
    target, store = _destination(stack, bucket)
    results = {r["product_id"]: r for r in upload_images(store, target, images, location.url, "p", source=source)}
    assert results["KEPT"]["status"] == "uploaded"
    assert results["REWRITTEN"]["status"] == "failed" and not results["REWRITTEN"]["retryable"]
    assert "object changed since the manifest was built; rebuild the manifest" in results["REWRITTEN"]["error"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["p/KEPT.jpg"]


@pytest.mark.fault(
    "images_dir an s3:// location outside PUBLISHER_ALLOWED_INPUTS (another prefix of an allowed bucket, or '..')",
    "build_manifest fails at once naming images_dir and the allowed inputs; nothing is listed or read",
)
@pytest.mark.parametrize("value", ["s3://{landing}/other", "s3://{landing}", "s3://{landing}/in/../other"])
def test_an_images_location_outside_the_allowed_inputs_is_refused(stack, landing, value):
    from include.catalog_publisher.allowed_inputs import confine_images

    with pytest.raises(PublisherError, match="allowed inputs|not an s3://bucket"):
        confine_images(value.format(landing=landing), "images_dir")
    assert confine_images(f"s3://{landing}/in/2025", "images_dir") == f"s3://{landing}/in/2025"


def test_the_runbook_commands_take_a_landing_bucket_and_keep_their_formats(stack, s3, landing, bucket, tmp_path):
    from tests.integration.test_runbook import run

    images = {f"in/P{i}.jpg": image_bytes(seed=i) for i in range(3)}
    fill(s3, landing, images)
    source = f"s3://{landing}/in"
    doctor = run(tmp_path, f"python scripts/doctor.py --images-dir {source} --bucket-name {bucket}")
    assert f"{source} holds images (first: {source}/P0.jpg, image/jpeg)" in doctor.stdout, doctor.stdout
    prepared = run(tmp_path, f"python scripts/s3/prepare_s3_upload.py --images-dir {source} --output-file m.json")
    assert prepared.returncode == 0 and "3 images" in prepared.stdout, prepared.stderr
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert {"timestamp", "total_images", "total_size_bytes", "total_size_mb", "images"} <= manifest.keys()
    assert [(i["product_id"], i["file_path"]) for i in manifest["images"]] == [
        (f"P{i}", f"{source}/P{i}.jpg") for i in range(3)
    ]
    command = f"python scripts/s3/upload_to_s3.py --manifest-file m.json --bucket-name {bucket} --prefix products"
    uploaded = run(tmp_path, command)
    assert uploaded.returncode == 0, uploaded.stderr
    mapping = json.loads((tmp_path / "s3_url_mapping.json").read_text())
    assert (mapping["uploaded_images"], mapping["failed_images"], sorted(mapping["product_to_s3_url"])) == (
        3,
        0,
        ["P0", "P1", "P2"],
    )
    for key, body in images.items():
        assert s3.get_object(Bucket=bucket, Key=f"products/{key[3:]}")["Body"].read() == body
    again = run(tmp_path, command)
    assert "0 of 3 images uploaded" in again.stdout and "3 unchanged (skipped)" in again.stdout, again.stdout


@pytest.mark.fault(
    "a landing bucket holding an object whose name has a control character, beside good images (and keys with an "
    "empty, '.' or '..' segment, which AWS stores and the object store client cannot address)",
    "those objects are skipped, each with its reason (rename the object); the others are published",
)
def test_objects_with_unaddressable_keys_are_skipped_and_the_rest_published(s3, landing, tmp_path):
    fill(s3, landing, {"in/GOOD.jpg": image_bytes(seed=1), "in/BELL\x07.jpg": image_bytes(seed=4)})
    where = reader(landing)
    summary = write_manifest(where.location.url, tmp_path / "manifest.json", bucket=where)
    assert [i["product_id"] for i in iter_manifest_images(tmp_path / "manifest.json")] == ["GOOD"]
    (skipped,) = json.loads((tmp_path / "manifest.json").read_text())["skipped"]
    assert summary.skipped_files == 1 and "control characters" in skipped["reason"]
    # SeaweedFS folds "//" and refuses "." and ".." segments that AWS keeps: the rule alone for those keys.
    for key in ("in/odd//EMPTY.jpg", "in/./DOT.jpg", "in/../UP.jpg"):
        item = bucket_images._listed(where.location, {"key": key}, None)
        assert "empty, '.' or '..' segment" in bucket_images._skip_reason(item), key


def test_the_listing_gives_every_key_as_s3_stores_it_and_lists_a_clean_bucket_without_boto3(s3, landing):
    """The scan lists through obstore (fast) while it gives keys exactly. Where it may not (a key it refuses, a tab;
    a key it mangles, a control character it cannot carry; a "folder" marker it gives without its slash) boto3
    lists the rest from the last page obstore gave; the listing is boto3's own either way, page after page."""
    clean = {f"in/P{i:04d}.jpg": b"x" for i in range(1, 1201)}  # two pages and a bit
    fill(s3, landing, {**clean, "in/": b""})  # the prefix's own "folder" marker, as the console makes it
    boto3_lists = []
    where = reader(landing)
    where.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: boto3_lists.append(1))

    def keys() -> list[str]:
        return [o["key"] for page in bucket_images._pages(where, "in/") for o in page]

    def boto3_keys() -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=landing, Prefix="in/")
        return [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"] != "in/"]

    assert keys() == sorted(clean) and boto3_lists == []
    for odd in ("in/P1100\tTAB.jpg", "in/P1101-BELL\x07.jpg", "in/P1102/"):
        fill(s3, landing, {odd: b"x" if not odd.endswith("/") else b""})
        boto3_lists.clear()
        listed = keys()
        assert listed == boto3_keys() and odd in listed, odd
        assert len(boto3_lists) == 1  # the page with the odd key and the one after: the rest of the listing
        s3.delete_object(Bucket=landing, Key=odd)


@pytest.mark.fault(
    "images_dir names a landing bucket that does not exist (a typo, or a bucket deleted since)",
    "build_manifest fails at once with one error naming the location, not retried; no manifest is written",
)
def test_a_landing_bucket_that_does_not_exist_is_one_clear_error(stack, tmp_path, monkeypatch):
    missing = f"landing-missing-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PUBLISHER_ALLOWED_INPUTS", f"{os.environ['PUBLISHER_ALLOWED_INPUTS']},s3://{missing}/in")
    where = reader(missing)
    with pytest.raises(PublisherError) as raised:
        write_manifest(where.location.url, tmp_path / "manifest.json", bucket=where)
    assert type(raised.value) is PublisherError  # a user's error: Airflow does not retry it
    assert "cannot list the images" in str(raised.value) and f"s3://{missing}/in" in str(raised.value)
    assert not (tmp_path / "manifest.json").exists()


def test_what_a_copy_answers_is_checked_against_the_scan():
    """bucket_images._verified on the answers S3 gives (AWS returns the copy's SHA-256; SeaweedFS, an MD5 ETag;
    SSE-KMS, an ETag that is no MD5): the logic alone, no service involved."""
    body = image_bytes(seed=1)
    image = {"sha256": hashlib.sha256(body).hexdigest(), "md5": base64.b64encode(hashlib.md5(body).digest()).decode()}
    md5 = hashlib.md5(body).hexdigest()
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert bucket_images._verified({"CopyObjectResult": {"ETag": f'"{md5}"'}}, image) == md5
    assert bucket_images._verified({"CopyObjectResult": {"ETag": '"abc"', "ChecksumSHA256": sha}}, image) == "abc"
    kms = {"CopyObjectResult": {"ETag": '"0123"'}, "ServerSideEncryption": "aws:kms"}
    assert bucket_images._verified(kms, image) == "0123"  # a KMS bucket's default: its ETag is no MD5
    for wrong in ({"CopyObjectResult": {"ETag": '"0123"'}}, {"CopyObjectResult": {"ChecksumSHA256": "AAAA"}}):
        with pytest.raises(bucket_images.SourceChanged):
            bucket_images._verified(wrong, image)
