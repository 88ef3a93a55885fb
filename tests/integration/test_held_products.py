"""A transient miss keeps the live image: in a flat run, a product whose image file was caught mid-write (empty),
changed while the run uploaded it, or could not be read is left at its live version instead of being published
without its image_url; a scan that could not read part of the folder leaves every product without an image this
run as it is. A product whose image was really removed is still published without one.

The run is the DAG's own task bodies in its order (build_manifest ... publish_to_kafka), so a fault can come
between two of them, for real: a file rewritten after the manifest, a file the scan cannot read (the scan runs as
an unprivileged user: root reads any file)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from include.catalog_publisher import publisher_tasks
from include.catalog_publisher.run_artifacts import RunArtifacts
from include.catalog_publisher.s3_store import Encryption
from tests.helpers import read_topic, run_as_nobody, s3_client, write_catalog, write_image

PRODUCTS = ["P1", "P2", "P3", "P4"]


@pytest.fixture
def flat(stack, monkeypatch):
    """Images and catalog in a folder every user may read, the project home every user may write (the scan of
    the unreadable case runs as nobody), a fresh bucket and topic."""
    root = Path(tempfile.mkdtemp(prefix="catalog-publisher-held-"))
    os.chmod(root, 0o777)
    home, images = root / "home", root / "images"
    home.mkdir(mode=0o777)
    os.chmod(home, 0o777)
    for i, pid in enumerate(PRODUCTS):
        write_image(images / f"{pid}.jpg", seed=i)
    write_catalog(root / "products.json", [{"product_id": pid, "name": pid} for pid in PRODUCTS])
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(home))
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    bucket, topic = f"held-{uuid.uuid4().hex[:8]}", f"held-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    yield {"root": root, "images": images, "catalog": root / "products.json", "bucket": bucket, "topic": topic}
    shutil.rmtree(root, ignore_errors=True)


def _world_writable(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        if path.is_dir():
            os.chmod(path, 0o777)


def publish(flat: dict, run_id: str, *, between=None, scan_as_nobody: bool = False) -> tuple[dict, dict, dict]:
    mapping, catalog, sent, _ = publish_and_delete(flat, run_id, between=between, scan_as_nobody=scan_as_nobody)
    return mapping, catalog, sent


def publish_and_delete(flat: dict, run_id: str, *, between=None, scan_as_nobody: bool = False, delete=False):
    """One flat run of the DAG's task bodies; `between` runs after the manifest, before the uploads."""
    run = RunArtifacts("publish_product_images", run_id)
    build = (publisher_tasks.build_manifest, run, str(flat["images"]), "flat", None, None)
    if scan_as_nobody:
        run.dir.mkdir(parents=True, exist_ok=True)
        _world_writable(Path(os.environ["CATALOG_PUBLISHER_HOME"]))
        part = run_as_nobody(*build)
    else:
        part = build[0](*build[1:])
    bucket = flat["bucket"]
    batches, manifest = publisher_tasks.plan_batches(run, [part], 100, 1024, bucket, "p", False)
    if between:
        between()
    results = [publisher_tasks.upload_batch(run, manifest, b, bucket, "p", 4, Encryption(None, None)) for b in batches]
    mapping = publisher_tasks.merge_url_mapping(run, results, bucket, "p", "https://cdn.example.com", 50)
    catalog = publisher_tasks.update_catalog(run, str(flat["catalog"]), mapping, manifest)
    sent = publisher_tasks.publish_to_kafka(run, catalog, flat["topic"])
    params = {"delete_removed_images": delete, "bucket": bucket, "prefix": "p", "topic": flat["topic"]}
    deleted = (
        publisher_tasks.delete_removed_images(run, manifest, catalog, params | {"max_deletions": 10})
        if delete
        else None
    )
    return mapping, catalog, sent, deleted


def live(stack, topic: str) -> dict:
    """Each product's live document on the topic (its last message)."""
    return dict(read_topic(stack.kafka_bootstrap, topic))


def test_an_image_caught_mid_write_or_changed_during_the_upload_keeps_its_live_url(stack, flat):
    _, _, first = publish(flat, "first")
    assert first["published"] == 4
    before = live(stack, flat["topic"])
    assert all(before[pid]["image_url"] == f"https://cdn.example.com/p/{pid}.jpg" for pid in PRODUCTS)

    (flat["images"] / "P2.jpg").write_bytes(b"")  # caught mid-write: nothing written yet
    (flat["images"] / "P4.jpg").unlink()  # really removed: published without an image
    (flat["images"] / "P1.xmp").write_text("<x:xmpmeta/>")  # a sidecar, not an image: P1 keeps its image
    changed = write_image(flat["images"] / "P3.jpg", seed=41)  # a new picture, still being written when uploaded
    rewrite = lambda: write_image(changed, seed=42, side=40)  # noqa: E731
    mapping, catalog, sent, marked = publish_and_delete(flat, "second", between=rewrite, delete=True)

    assert mapping["failed_images"] == 1  # P3: changed since the manifest
    assert (catalog["held"], catalog["held_examples"]) == (2, ["P2", "P3"])
    assert catalog["held_reason"] == "their image could not be read or uploaded this run"
    assert (catalog["products_without_image"], sent["published"], sent["removed"]) == (1, 1, 0)
    after = live(stack, flat["topic"])
    assert after["P2"] == before["P2"] and after["P3"] == before["P3"]  # still their live images
    assert "image_url" not in after["P4"]
    # Only the really removed image's object is marked for deletion: P2's live document still points at its own.
    assert (marked["pending"], marked["examples"]) == (1, ["p/P4.jpg"])

    # The files settle: the next run publishes the new picture of P3 and P2's again, and holds nothing.
    write_image(flat["images"] / "P2.jpg", seed=7)
    _, catalog, sent = publish(flat, "third")
    assert catalog["held"] == 0 and sent["published"] == 2
    after = live(stack, flat["topic"])
    assert after["P3"]["image_sha256"] != before["P3"]["image_sha256"]


@pytest.mark.fault(
    "a flat run whose scan cannot read an image file (permissions)",
    "its product and every product without an image this run stay at their live version (held, with the reason in "
    "the run report); nothing is published without an image it cannot vouch for",
)
def test_a_scan_that_could_not_read_part_of_the_folder_publishes_nothing_without_an_image(stack, flat):
    publish(flat, "first")
    before = live(stack, flat["topic"])

    os.chmod(write_image(flat["images"] / "P1.jpg", seed=9), 0)  # a new picture the scan must read, and cannot
    (flat["images"] / "P4.jpg").unlink()  # removed, but the scan cannot tell it from one in an unreadable folder
    _, catalog, sent = publish(flat, "second", scan_as_nobody=True)

    assert (catalog["held"], catalog.get("held_examples")) == (2, ["P1", "P4"]), catalog
    assert catalog["held_reason"].startswith(f"the scan could not read {flat['images'] / 'P1.jpg'}")
    assert (sent["published"], sent["removed"]) == (0, 0)
    assert live(stack, flat["topic"]) == before
