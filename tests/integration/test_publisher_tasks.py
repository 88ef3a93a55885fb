"""The DAG's task bodies where they decide something themselves: the failure threshold, a run without a
manifest, a catalog with products the publish could not key, per-image failures that are not the service's."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from include.catalog_publisher import publisher_tasks
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import write_manifest
from include.catalog_publisher.run_artifacts import RunArtifacts
from tests.helpers import fault_proxy, manifest_of_run, write_catalog, write_image


def results_file(tmp_path, failed: int, total: int):
    results = [
        {
            "product_id": f"P{i}",
            "file_path": f"P{i}.jpg",
            "key": f"p/P{i}.jpg",
            "bytes": 1,
            "status": "failed" if i < failed else "uploaded",
            "error": "boom",
        }
        for i in range(total)
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": results}))
    return [{"results": str(path)}]


def with_manifest(run: RunArtifacts, tmp_path) -> RunArtifacts:
    """The run's build_manifest ran: its manifest is saved."""
    write_image(tmp_path / "images" / "P0.jpg")
    write_manifest(tmp_path / "images", run.manifest)
    return run


def test_the_run_fails_only_above_the_tolerated_failure_share_and_keeps_the_mapping(stack, tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    run = with_manifest(RunArtifacts("publish_product_images", "threshold"), tmp_path)
    batches = results_file(tmp_path, failed=1, total=20)  # 5% failed

    summary = publisher_tasks.merge_url_mapping(run, batches, "product-images", "p", "", max_failed_percent=5)
    assert (summary["uploaded_images"], summary["failed_images"]) == (19, 1)

    with pytest.raises(PublisherError, match=r"1 of 20 images failed \(5.0% > max_failed_percent 4\)"):
        publisher_tasks.merge_url_mapping(run, batches, "product-images", "p", "", max_failed_percent=4)
    mapping = json.loads(run.url_mapping.read_text())  # written before failing, with the reasons
    assert mapping["failures"] == [{"product_id": "P0", "file_path": "P0.jpg", "reason": "boom"}]


@pytest.mark.fault(
    "merge_url_mapping of a run without a manifest (its run folder removed by retention, then the task cleared)",
    "skipped; no mapping written, the latest data/s3_url_mapping.json left byte for byte",
)
def test_a_run_without_a_manifest_skips_the_mapping_and_leaves_the_latest_one(stack, tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    latest = tmp_path / "data" / "s3_url_mapping.json"
    latest.parent.mkdir(parents=True)
    latest.write_text('{"product_to_s3_url": {"P1": "https://b.s3.amazonaws.com/p/P1.jpg"}}')
    before = latest.read_bytes()
    run = RunArtifacts("publish_product_images", "empty day")

    with pytest.raises(AirflowSkipException, match="no manifest"):
        publisher_tasks.merge_url_mapping(run, [], "product-images", "p", "", max_failed_percent=0)

    assert latest.read_bytes() == before
    assert not run.url_mapping.exists()


@pytest.mark.fault(
    "a catalog product without 'product_id' or 'id'",
    "update_catalog fails at once naming where, before anything is published; the latest catalog is left as it was",
)
def test_a_product_without_an_id_fails_the_catalog_step_before_publishing(stack, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    run = RunArtifacts("publish_product_images", "no id")
    run.url_mapping.parent.mkdir(parents=True, exist_ok=True)
    run.url_mapping.write_text(json.dumps({"product_to_s3_url": {"P1": "https://b.s3.amazonaws.com/p/P1.jpg"}}))
    products = [{"product_id": "P1"}, {"name": "nameless"}, {"id": "P3"}]
    catalog = write_catalog(tmp_path / "data" / "catalog.json", products)
    mapping = {"url_mapping": str(run.url_mapping)}

    expected = r"1 products without 'product_id' or 'id' \(at #2\).*nothing was published"
    with pytest.raises(PublisherError, match=expected):
        publisher_tasks.update_catalog(run, str(catalog), mapping, manifest_of_run(run))
    assert not (tmp_path / "data" / "products_with_s3_urls.json").exists()

    # A run over date folders publishes the whole catalog too: the same refusal.
    params = {"bucket": bucket, "prefix": "p", "public_base_url": ""}
    with pytest.raises(PublisherError, match=expected):
        publisher_tasks.update_catalog(run, str(catalog), mapping, manifest_of_run(run, "2025-06-01"), params)
    assert not (tmp_path / "data" / "products_with_s3_urls.json").exists()


@pytest.mark.fault(
    "S3 refusing some images for good (403 AccessDenied, a KMS key that denies, 400 InvalidRequest)",
    "upload_batch succeeds, those images recorded as failed, not retried; counted against max_failed_percent",
)
def test_images_refused_for_good_are_recorded_and_counted_not_retried(stack, s3, tmp_path, monkeypatch):
    bucket = f"refuse-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for i in range(10):
        write_image(tmp_path / "images" / f"P{i}.jpg", seed=i)
    refusals = {
        "P1.jpg": (403, "AccessDenied", "Access Denied"),
        "P2.jpg": (403, "KMS.AccessDeniedException", "User is not authorized to use the KMS key"),
        "P3.jpg": (400, "InvalidRequest", "Invalid storage class"),
    }
    puts: dict[str, int] = {}
    lock = threading.Lock()

    def refuse(method, path, headers, body):
        name = path.rsplit("/", 1)[-1]
        if method != "PUT" or name not in refusals:
            return None
        with lock:
            puts[name] = puts.get(name, 0) + 1
        status, code, message = refusals[name]
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        return status, {"Content-Type": "application/xml"}, body

    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    run = RunArtifacts("publish_product_images", "refusals")
    written = write_manifest(tmp_path / "images", run.manifest)  # as build_manifest's one shard writes it
    totals = {"images": written.total_images, "bytes": written.total_size_bytes, "skipped_files": 0}
    with fault_proxy(stack.s3_endpoint, refuse) as endpoint:
        connection = json.loads(stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
        connection["extra"]["endpoint_url"] = endpoint
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
        shard = {"part": str(run.manifest), "images_dir": str(tmp_path / "images"), "date_folders": "", **totals}
        (batch,), manifest = publisher_tasks.plan_batches(run, [shard], 100, 10, bucket, "p", False)
        outcome = publisher_tasks.upload_batch(run, manifest, batch, bucket, "p", 4)

        assert (outcome["uploaded"], outcome["failed"]) == (7, 3)
        assert puts == dict.fromkeys(refusals, 1)  # a refusal is final: not retried by the client either
        results = {r["file_path"].rsplit("/", 1)[-1]: r for r in json.loads(run.results(0).read_text())["results"]}
        assert not any(results[name]["retryable"] for name in refusals)
        assert "access to bucket" in results["P1.jpg"]["error"] and "403 AccessDenied" in results["P1.jpg"]["error"]
        assert "the KMS key refused" in results["P2.jpg"]["error"]
        assert "400 InvalidRequest" in results["P3.jpg"]["error"]

        summary = publisher_tasks.merge_url_mapping(run, [outcome], bucket, "p", "", max_failed_percent=30)
        assert (summary["uploaded_images"], summary["failed_images"]) == (7, 3)
        with pytest.raises(PublisherError, match=r"3 of 10 images failed \(30.0% > max_failed_percent 20\)"):
            publisher_tasks.merge_url_mapping(run, [outcome], bucket, "p", "", max_failed_percent=20)
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == [f"p/P{i}.jpg" for i in (0, 4, 5, 6, 7, 8, 9)]
