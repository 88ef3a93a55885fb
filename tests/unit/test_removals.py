"""Which objects a run may delete (removals.py), without a bucket: the scope of a run, and the scan that
could not read part of the images folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import write_manifest
from include.catalog_publisher.removals import (
    check_removals,
    in_scope,
    indexed,
    load_pending,
    plan_removals,
    save_pending,
    scope,
)
from tests.helpers import run_as_nobody, write_image


@pytest.mark.parametrize(
    "key, prefix, days, expected",
    [
        ("products/PROD-1.jpg", "products", None, True),
        ("products/archive/PROD-1.jpg", "products", None, False),  # deeper: not a key of a flat run
        ("other/PROD-1.jpg", "products", None, False),
        ("productsX/PROD-1.jpg", "products", None, False),
        ("products/2025-06-02/PROD-1.jpg", "products", ["2025-06-02"], True),
        ("products/2025-06-01/PROD-1.jpg", "products", ["2025-06-02"], False),  # another day
        ("products/2025-06-02/x/PROD-1.jpg", "products", ["2025-06-02"], False),
        ("products/PROD-1.jpg", "products", ["2025-06-02"], False),
    ],
)
def test_a_run_deletes_only_within_its_own_scope(key, prefix, days, expected):
    assert in_scope(key, prefix, days) is expected


@pytest.mark.fault(
    "a folder of the images folder cannot be read (permissions) when deleting removed images",
    "no object is deleted at all: the scan names the unreadable folder (an unreadable folder looks removed)",
)
def test_an_unreadable_folder_blocks_every_deletion():
    # /tmp directly (not pytest's 0700 tmp_path) so the unprivileged child can traverse it and write the manifest.
    root = Path(tempfile.mkdtemp(prefix="removals-"))
    try:
        root.chmod(0o777)
        images = root / "images"
        write_image(images / "PROD-1.jpg").chmod(0o644)
        write_image(images / "locked" / "PROD-2.jpg").chmod(0o644)
        images.chmod(0o755)
        os.chmod(images / "locked", 0o000)
        manifest = root / "manifest.json"
        run_as_nobody(write_manifest, images, manifest)  # as a worker user who cannot list `locked`
        skipped = json.loads(manifest.read_text())["skipped"]
        assert [(Path(s["file_path"]).name, s["reason"].split(" (")[0]) for s in skipped] == [("locked", "cannot read")]
        with pytest.raises(PublisherError, match=r"not deleting anything: the scan could not read 1 files or folders"):
            scope(str(manifest), "products")
    finally:
        os.chmod(root / "images" / "locked", 0o755)
        shutil.rmtree(root)


def test_keys_no_image_has_are_planned_for_deletion(tmp_path):
    write_image(tmp_path / "images" / "PROD-1.jpg")
    write_manifest(tmp_path / "images", tmp_path / "manifest.json")
    keys = ["p/PROD-1.jpg", "p/PROD-2.jpg", "p/deeper/PROD-3.jpg", "q/PROD-4.jpg"]
    days = scope(tmp_path / "manifest.json", "p")
    assert days is None and plan_removals(tmp_path / "manifest.json", keys, "p", days, {}, {"PROD-2"}) == [
        "p/PROD-2.jpg"
    ]


@pytest.mark.fault(
    "deleting removed images without a prefix",
    "refused: with an empty prefix every object at the bucket's root would be in scope",
)
def test_without_a_prefix_nothing_is_in_scope(tmp_path):
    write_image(tmp_path / "images" / "PROD-1.jpg")
    write_manifest(tmp_path / "images", tmp_path / "manifest.json")
    with pytest.raises(PublisherError, match="delete_removed_images needs a prefix"):
        scope(tmp_path / "manifest.json", "/")


def _dated(tmp_path, days: dict[str, list[str]]):
    for day, ids in days.items():
        (tmp_path / "images" / day).mkdir(parents=True, exist_ok=True)
        for pid in ids:
            write_image(tmp_path / "images" / day / f"{pid}.jpg")
    write_manifest(tmp_path / "images", tmp_path / "manifest.json", ["2025-06-01", "2025-06-02", "2025-06-03"])
    return tmp_path / "manifest.json"


@pytest.mark.fault(
    "a run over several days where one day's folder is missing or empty, with deletion on",
    "that day is out of scope: none of its objects is deleted (a missing folder looks exactly like removed images)",
)
def test_a_day_whose_folder_is_missing_or_empty_is_out_of_scope(tmp_path):
    manifest = _dated(tmp_path, {"2025-06-01": ["PROD-A"], "2025-06-02": []})  # 06-02 empty, 06-03 missing
    days = scope(manifest, "p")
    listed = ["p/2025-06-01/PROD-A.jpg", "p/2025-06-01/PROD-GONE.jpg", "p/2025-06-02/PROD-B.jpg", "p/2025-06-03/C.jpg"]
    assert days == ["2025-06-01"]
    assert plan_removals(manifest, listed, "p", days, {}, set()) == ["p/2025-06-01/PROD-GONE.jpg"]


@pytest.mark.fault(
    "a dated re-run after a product's image of that day was removed, the product still in the catalog",
    "its object is kept: the product's live document still points at it (only an unreferenced day's copy goes)",
)
def test_an_object_a_live_product_points_at_is_kept(tmp_path):
    manifest = _dated(tmp_path, {"2025-06-01": ["PROD-A"]})
    listed = ["p/2025-06-01/PROD-A.jpg", "p/2025-06-01/PROD-X.jpg", "p/2025-06-01/PROD-Y.jpg"]
    live = {"PROD-X": "2025-06-01", "PROD-Y": "2025-06-04"}  # X's live document is this day's; Y's a later day's
    assert plan_removals(manifest, listed, "p", ["2025-06-01"], live, {"PROD-X", "PROD-Y"}) == [
        "p/2025-06-01/PROD-Y.jpg"
    ]
    # Without the published state, no day of a product still in the catalog goes.
    assert plan_removals(manifest, listed, "p", ["2025-06-01"], None, {"PROD-X", "PROD-Y"}) == []


def test_pending_deletions_are_per_bucket_and_prefix_with_the_topics_ends_when_marked(tmp_path):
    save_pending(tmp_path / "pending.json", "b", "p/", {"p/A.jpg": {0: 5, 1: 0}, "p/B.jpg": {0: 9, 1: 2}})
    assert load_pending(tmp_path / "pending.json", "b", "p") == {"p/A.jpg": {0: 5, 1: 0}, "p/B.jpg": {0: 9, 1: 2}}
    assert load_pending(tmp_path / "pending.json", "b", "other") == {}
    assert load_pending(None, "b", "p") == {}
    (tmp_path / "pending.json").write_text("{cut")
    assert load_pending(tmp_path / "pending.json", "b", "p") == {}
    # Marked against another topic (the catalog moved to a new one): the keys wait for this topic's current end.
    save_pending(tmp_path / "pending.json", "b", "p/", {"p/A.jpg": {0: 5}}, topic="products")
    assert load_pending(tmp_path / "pending.json", "b", "p", "products") == {"p/A.jpg": {0: 5}}
    assert load_pending(tmp_path / "pending.json", "b", "p", "products-v2") == {"p/A.jpg": None}
    # A version 1 file (keys only, no format field): its keys are pending, their ends unknown.
    (tmp_path / "pending.json").write_text(json.dumps({"bucket": "b", "prefix": "p", "keys": ["p/A.jpg"]}))
    assert load_pending(tmp_path / "pending.json", "b", "p") == {"p/A.jpg": None}


def test_a_pending_object_goes_only_once_the_indexer_committed_past_the_ends_it_was_marked_at():
    marked = {0: 5, 1: 0}  # partition 1 held nothing then
    assert indexed(marked, {0: 5, 1: -1001}, current={0: 7, 1: 3})
    assert not indexed(marked, {0: 4, 1: 3}, current={0: 7, 1: 3})
    assert not indexed(marked, None, current={0: 7, 1: 3})  # the group's position could not be told
    assert not indexed(None, {0: 5, 1: 0}, current={0: 7, 1: 3})  # unknown ends wait for the topic's current ones
    assert indexed(None, {0: 7, 1: 3}, current={0: 7, 1: 3})
    assert not indexed(None, {0: 7, 1: 3}, current=None)


@pytest.mark.fault(
    "more objects to delete than max_deletions",
    "the deletion step fails naming the count, examples and the setting; nothing is deleted",
)
def test_more_deletions_than_allowed_are_refused_with_the_setting():
    with pytest.raises(
        PublisherError, match=r"3 objects in s3://b/p have no image .*\(e.g. a, b, c\).*max_deletions 2"
    ):
        check_removals(["a", "b", "c"], 2, "s3://b/p")
    check_removals(["a", "b"], 2, "s3://b/p")
