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
from include.catalog_publisher.removals import check_removals, in_scope, plan_removals
from tests.helpers import run_as_nobody, write_image


@pytest.mark.parametrize(
    "key, prefix, days, expected",
    [
        ("products/PROD-1.jpg", "products", None, True),
        ("products/archive/PROD-1.jpg", "products", None, False),  # deeper: not a key of a flat run
        ("other/PROD-1.jpg", "products", None, False),
        ("productsX/PROD-1.jpg", "products", None, False),
        ("PROD-1.jpg", "", None, True),
        ("products/PROD-1.jpg", "", None, False),
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
            plan_removals(str(manifest), ["PROD-1.jpg", "PROD-2.jpg", "PROD-3.jpg"], "")
    finally:
        os.chmod(root / "images" / "locked", 0o755)
        shutil.rmtree(root)


def test_keys_no_image_has_are_planned_for_deletion(tmp_path):
    write_image(tmp_path / "images" / "PROD-1.jpg")
    write_manifest(tmp_path / "images", tmp_path / "manifest.json")
    keys = ["p/PROD-1.jpg", "p/PROD-2.jpg", "p/deeper/PROD-3.jpg", "q/PROD-4.jpg"]
    assert plan_removals(str(tmp_path / "manifest.json"), keys, "p") == ["p/PROD-2.jpg"]


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
