"""Step 1: the manifest. Real image files on disk; no services needed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import (
    UnsafePathError,
    iter_manifest_images,
    open_inside,
    read_manifest_header,
    scan_images,
    sniff_content_type,
    write_manifest,
)
from tests.helpers import IMAGE_FORMATS, run_as_nobody, write_image

REFERENCE_KEYS = {"timestamp", "total_images", "total_size_bytes", "total_size_mb", "images"}
REFERENCE_IMAGE_KEYS = {"product_id", "file_path", "file_size", "content_type"}


def test_every_format_is_found_recursively_with_its_type_from_the_signature(tmp_path):
    images = tmp_path / "images"
    for i, fmt in enumerate(IMAGE_FORMATS):
        write_image(images / f"cat-{i}" / f"PROD-{i}.{fmt.lower()}", fmt, seed=i)
    write_image(images / "PROD-png-named-jpg.jpg", "PNG")  # the extension lies: the signature wins
    (images / "PROD-text.jpg").write_text("not an image at all")
    (images / "PROD-empty.png").write_bytes(b"")

    entries = list(scan_images(images))
    found = {e["product_id"]: e["content_type"] for e in entries if "skipped" not in e}
    skipped = {Path(e["file_path"]).name: e["skipped"] for e in entries if "skipped" in e}

    assert found == {
        **{f"PROD-{i}": ctype for i, ctype in enumerate(IMAGE_FORMATS.values())},
        "PROD-png-named-jpg": "image/png",
    }
    assert skipped == {"PROD-text.jpg": "not an image (unrecognised file signature)", "PROD-empty.png": "empty file"}


def test_entries_carry_size_and_checksums_of_the_file(tmp_path):
    path = write_image(tmp_path / "PROD-1.jpg", side=64)
    (entry,) = scan_images(tmp_path)
    data = path.read_bytes()
    assert entry["file_size"] == len(data)
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["relative_path"] == "PROD-1.jpg" and entry["file_name"] == "PROD-1.jpg"


def test_manifest_has_the_reference_format_and_a_deterministic_order(tmp_path):
    images = tmp_path / "images"
    for name in ["b/PROD-3.jpg", "PROD-2.jpg", "a/PROD-1.jpg", "PROD-10.jpg"]:
        write_image(images / name)
    first = write_manifest(images, tmp_path / "m1.json")
    write_manifest(images, tmp_path / "m2.json")

    manifest = json.loads((tmp_path / "m1.json").read_text())
    assert manifest.keys() >= REFERENCE_KEYS
    assert all(image.keys() >= REFERENCE_IMAGE_KEYS for image in manifest["images"])
    assert manifest["total_images"] == first.total_images == 4
    assert manifest["total_size_bytes"] == sum(i["file_size"] for i in manifest["images"])
    assert manifest["total_size_mb"] == round(manifest["total_size_bytes"] / 1024 / 1024, 2)
    order = [i["relative_path"] for i in manifest["images"]]
    # In object-key order (the file name, wherever the folder), so planning can walk it beside the bucket listing.
    assert order == ["a/PROD-1.jpg", "PROD-10.jpg", "PROD-2.jpg", "b/PROD-3.jpg"]
    assert manifest["images_order"] == "object key"
    assert order == [i["relative_path"] for i in json.loads((tmp_path / "m2.json").read_text())["images"]]
    assert list(iter_manifest_images(tmp_path / "m1.json")) == manifest["images"]
    assert read_manifest_header(tmp_path / "m1.json")["total_images"] == 4


def test_symlinks_and_paths_out_of_the_images_dir_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    secret = write_image(outside / "PROD-secret.jpg")
    images = tmp_path / "images"
    write_image(images / "PROD-1.jpg")
    (images / "PROD-link.jpg").symlink_to(secret)
    (images / "linked-dir").symlink_to(outside, target_is_directory=True)

    entries = list(scan_images(images))
    assert [e["product_id"] for e in entries if "skipped" not in e] == ["PROD-1"]
    skipped = {Path(e["file_path"]).name: e["skipped"] for e in entries if "skipped" in e}
    assert skipped == {
        n: "symlink, not followed; copy the real file into the images directory"
        for n in ("PROD-link.jpg", "linked-dir")
    }
    assert not any("PROD-secret" in e["file_path"] for e in entries)


def test_opening_an_image_never_goes_through_a_symlink_or_out_of_the_folder(tmp_path):
    """What the upload step opens, from a manifest that may have been edited: no symlinked file or folder on the
    way, no '..', no absolute path; a real file in a real subfolder opens."""
    outside = tmp_path / "outside"
    secret = write_image(outside / "PROD-secret.jpg")
    images = tmp_path / "images"
    inner = write_image(images / "2026-11-25" / "PROD-1.jpg")
    (images / "linked-dir").symlink_to(outside, target_is_directory=True)
    (images / "2026-11-25" / "PROD-link.jpg").symlink_to(secret)

    fd = open_inside(images, "2026-11-25/PROD-1.jpg")
    try:
        assert os.read(fd, 1 << 20) == inner.read_bytes()
    finally:
        os.close(fd)
    with pytest.raises(UnsafePathError, match="through a symlink: linked-dir/PROD-secret.jpg"):
        open_inside(images, "linked-dir/PROD-secret.jpg")
    with pytest.raises(UnsafePathError, match="symlink, not followed: 2026-11-25/PROD-link.jpg"):
        open_inside(images, "2026-11-25/PROD-link.jpg")
    for path in ("../outside/PROD-secret.jpg", str(secret), "2026-11-25/../../outside/PROD-secret.jpg"):
        with pytest.raises(UnsafePathError, match="leaves the images directory"):
            open_inside(images, path)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        open_inside(images, "2026-11-25")


def test_an_image_in_a_folder_the_worker_may_traverse_but_not_list_still_opens():
    """Folders on the way are only passed through (O_PATH): like a path-based open, execute permission is enough."""
    top = Path(tempfile.mkdtemp(prefix="traverse-only-"))  # pytest's tmp_path is under a folder only root enters
    images = top / "images"
    picture = write_image(images / "2026-11-25" / "PROD-1.jpg")
    picture.chmod(0o644)
    for folder in (top, images, images / "2026-11-25"):
        folder.chmod(0o711)

    def read() -> bytes:
        fd = open_inside(images, "2026-11-25/PROD-1.jpg")
        try:
            return os.read(fd, 1 << 20)
        finally:
            os.close(fd)

    try:
        assert run_as_nobody(read) == picture.read_bytes()
    finally:
        shutil.rmtree(top)


def test_duplicate_product_ids_keep_the_first_file_in_path_order(tmp_path):
    write_image(tmp_path / "a" / "PROD-1.jpg")
    write_image(tmp_path / "b" / "PROD-1.png", "PNG")
    entries = list(scan_images(tmp_path))
    assert [e["relative_path"] for e in entries if "skipped" not in e] == ["a/PROD-1.jpg"]
    assert "duplicate image for product PROD-1" in next(e["skipped"] for e in entries if "skipped" in e)


@pytest.mark.fault(
    "images folder missing, empty, or a file", "one error naming the path and the flag; no manifest written"
)
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist; pass --images-dir"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "no images found in"),
        (lambda root: (root / "file.txt").write_text("x") and root / "file.txt", "is not a directory"),
    ],
    ids=["missing", "empty", "not-a-directory"],
)
def test_bad_images_dir_is_one_clear_error_and_writes_nothing(tmp_path, make, message):
    images_dir = make(tmp_path)
    output = tmp_path / "out" / "manifest.json"
    with pytest.raises(PublisherError, match=message) as caught:
        write_manifest(images_dir, output)
    assert str(images_dir) in str(caught.value)
    assert not output.exists()


@pytest.mark.fault("a manifest rebuild that fails", "the previous manifest is left as it was")
def test_a_previous_manifest_survives_a_failed_rebuild(tmp_path):
    write_image(tmp_path / "images" / "PROD-1.jpg")
    output = tmp_path / "manifest.json"
    write_manifest(tmp_path / "images", output)
    before = output.read_bytes()
    with pytest.raises(PublisherError):
        write_manifest(tmp_path / "nowhere", output)
    assert output.read_bytes() == before


@pytest.mark.fault(
    "an unreadable image file (permissions)", "listed as skipped with the reason; the rest go into the manifest"
)
def test_an_unreadable_file_is_reported_with_its_reason_and_the_rest_is_listed():
    # /tmp directly (not pytest's 0700 tmp_path) so the unprivileged child can traverse it.
    root = Path(tempfile.mkdtemp(prefix="unreadable-"))
    root.chmod(0o755)
    write_image(root / "PROD-1.jpg").chmod(0o644)
    write_image(root / "PROD-2.jpg").chmod(0o000)

    try:
        entries = run_as_nobody(lambda: list(scan_images(root)))
    finally:
        shutil.rmtree(root)

    assert [e["product_id"] for e in entries if "skipped" not in e] == ["PROD-1"]
    (skipped,) = [e for e in entries if "skipped" in e]
    assert skipped["file_path"].endswith("PROD-2.jpg")
    assert skipped["skipped"] == "cannot read (Permission denied); fix its permissions or remove it"


def test_memory_does_not_grow_with_file_contents(tmp_path):
    big = tmp_path / "PROD-big.jpg"
    with open(big, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + b"\0" * 4)
        f.truncate(64 * 1024 * 1024)  # 64 MB, read in chunks
    tracemalloc.start()
    write_manifest(tmp_path, tmp_path / "manifest.json")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while scanning a 64 MB file"


def test_signature_sniffing_needs_real_signatures():
    assert sniff_content_type(b"GIF89a....") == "image/gif"
    assert sniff_content_type(b"RIFF\0\0\0\0WAVEfmt ") is None  # RIFF but audio
    assert sniff_content_type(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom") is None  # ISO-BMFF video
    assert sniff_content_type(b"") is None
    assert sniff_content_type(os.urandom(0)) is None


def test_a_run_over_several_days_takes_each_products_newest_image_and_keys_it_under_its_day(tmp_path):
    """Date folders are read newest first: a product in two of them gets the newer day's image, its
    `image_date`, and a key of that day; the older file is named as skipped. Flat runs keep the runbook's key."""
    from include.catalog_publisher.s3_store import image_key

    write_image(tmp_path / "2025-06-01" / "PROD-X.jpg", seed=1)
    write_image(tmp_path / "2025-06-03" / "PROD-X.jpg", seed=2)
    write_image(tmp_path / "2025-06-02" / "PROD-Y.jpg", seed=3)

    records = list(scan_images(tmp_path, subdirs=["2025-06-01", "2025-06-02", "2025-06-03"]))

    images = {r["product_id"]: r for r in records if "skipped" not in r}
    assert {pid: r["image_date"] for pid, r in images.items()} == {"PROD-X": "2025-06-03", "PROD-Y": "2025-06-02"}
    assert image_key("products", images["PROD-X"]) == "products/2025-06-03/PROD-X.jpg"
    (skipped,) = [r for r in records if "skipped" in r]
    assert skipped["file_path"].endswith("2025-06-01/PROD-X.jpg")
    assert skipped["skipped"] == "duplicate image for product PROD-X; the newest date folder's file is used"
    flat = next(r for r in scan_images(tmp_path / "2025-06-02"))
    assert "image_date" not in flat and image_key("products", flat) == "products/PROD-Y.jpg"


def test_files_unchanged_since_the_last_manifest_are_not_read_again(tmp_path, monkeypatch, caplog):
    """Size, mtime, ctime and inode equal to the last manifest's: digests and type reused, the file not read. A
    touched file, one replaced by another with the same mtime (new inode), one rewritten in place with its size
    and mtime restored (exiftool -P, touch -r: only the ctime tells), and a corrupt or foreign last manifest all
    mean reading again: slower, never a stale digest."""
    import include.catalog_publisher.manifest as manifest_module
    from include.catalog_publisher.manifest import previous_entries

    images = tmp_path / "images"
    an_hour_ago = time.time_ns() - 3600 * 10**9  # written well before the scan (see the racy rule's test)
    for i in range(4):
        os.utime(write_image(images / f"PROD-{i}.jpg", seed=i), ns=(an_hour_ago, an_hour_ago))
    first = write_manifest(images, tmp_path / "first.json")
    hashed = []
    real_hash = manifest_module._hash_file
    monkeypatch.setattr(manifest_module, "_hash_file", lambda fd: hashed.append(fd) or real_hash(fd))

    known = previous_entries(tmp_path / "first.json", images)
    write_manifest(images, tmp_path / "second.json", known=known)
    assert hashed == []  # nothing read again
    assert list(iter_manifest_images(tmp_path / "second.json")) == list(iter_manifest_images(tmp_path / "first.json"))

    touched, replaced = images / "PROD-1.jpg", images / "PROD-2.jpg"
    os.utime(touched, ns=(time_ns := touched.stat().st_mtime_ns + 10**9, time_ns))
    stamp = replaced.stat().st_mtime_ns
    write_image(tmp_path / "new.jpg", seed=99)
    os.replace(tmp_path / "new.jpg", replaced)  # another file (inode) at the same path, given the old mtime
    os.utime(replaced, ns=(stamp, stamp))
    edited = images / "PROD-3.jpg"
    data = bytearray(edited.read_bytes())
    data[-3] ^= 0xFF  # same size, same inode
    edited.write_bytes(data)
    os.utime(edited, ns=(an_hour_ago, an_hour_ago))  # the old mtime restored
    write_manifest(images, tmp_path / "third.json", known=known)
    assert len(hashed) == 3
    third = {i["product_id"]: i for i in iter_manifest_images(tmp_path / "third.json")}
    assert third["PROD-2"]["sha256"] == hashlib.sha256(replaced.read_bytes()).hexdigest()
    assert third["PROD-3"]["sha256"] == hashlib.sha256(bytes(data)).hexdigest()

    (tmp_path / "corrupt.json").write_text('{"total_images": 4, "images": [{"product_')
    assert previous_entries(tmp_path / "corrupt.json", images) == {}
    assert "cannot be used" in caplog.text
    assert previous_entries(tmp_path / "first.json", tmp_path / "elsewhere") == {}  # another folder's
    assert previous_entries(tmp_path / "missing.json", images) == {}
    assert first.total_images == 4


@pytest.mark.parametrize("dated", [False, True])
def test_shards_merged_make_the_manifest_one_task_would_have_made(tmp_path, dated):
    """Each shard scans only its products' files (duplicates of a product meet in one shard); merged, the shards
    give the same images, order, totals and skipped files as one scan of the whole folder."""
    from include.catalog_publisher.manifest import Shard, merge_manifests

    images = tmp_path / "images"
    days = ["2025-06-01", "2025-06-02"] if dated else [""]
    for n in range(40):
        write_image(images / days[n % len(days)] / ("nested" if n % 7 == 0 else "") / f"PROD-{n}.jpg", seed=n)
    write_image(images / days[-1] / "PROD-3.png", "PNG")  # a second image of PROD-3: one of the two is taken
    (images / days[0] / "PROD-text.jpg").write_text("not an image")
    subdirs = days if dated else None
    whole = write_manifest(images, tmp_path / "whole.json", subdirs)
    parts = [tmp_path / f"part-{i}.json" for i in range(3)]
    sizes = [write_manifest(images, part, subdirs, shard=Shard(i, 3)).total_images for i, part in enumerate(parts)]
    merged = merge_manifests(parts, tmp_path / "merged.json")

    assert all(sizes) and sum(sizes) == whole.total_images == merged.total_images == 40
    strip = lambda m: {k: v for k, v in m.items() if k not in ("timestamp", "scan_started_ns")}  # noqa: E731
    assert strip(json.loads((tmp_path / "merged.json").read_text())) == strip(
        json.loads((tmp_path / "whole.json").read_text())
    )


def test_merging_shards_without_any_image_names_the_folder(tmp_path):
    from include.catalog_publisher.manifest import NoImagesError, Shard, merge_manifests

    images = tmp_path / "images"
    (images / "notes.jpg").parent.mkdir(parents=True)
    (images / "notes.jpg").write_text("not an image")
    parts = [tmp_path / f"part-{i}.json" for i in range(2)]
    for i, part in enumerate(parts):
        write_manifest(images, part, shard=Shard(i, 2))  # a shard without images is no error by itself
    with pytest.raises(NoImagesError, match=rf"no images found in {images} \(1 files skipped, e.g. .*notes.jpg"):
        merge_manifests(parts, tmp_path / "merged.json")


def test_a_file_written_within_a_clock_tick_of_the_last_scan_is_read_again(tmp_path):
    """git's racy rule: a file written again within the file system's clock tick of the scan that hashed it keeps its
    mtime and ctime on a coarse clock (network file systems, FAT), so its entry is not trusted; one written well
    before the scan is. A manifest from before scans were timed is trusted for no file."""
    from include.catalog_publisher.manifest import previous_entries

    images = tmp_path / "images"
    path = write_image(images / "PROD-1.jpg", seed=1)
    write_manifest(images, tmp_path / "first.json")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(data)  # same size, same inode
    # What a coarse clock shows: the last manifest's entry stats exactly as the file does now, and its scan began
    # in the tick of this write.
    document = json.loads((tmp_path / "first.json").read_text())
    info = path.stat()
    document["images"][0].update(mtime_ns=info.st_mtime_ns, ctime_ns=info.st_ctime_ns, inode=info.st_ino)
    document["scan_started_ns"] = info.st_mtime_ns + 10**9
    (tmp_path / "racy.json").write_text(json.dumps(document))

    known = previous_entries(tmp_path / "racy.json", images)
    assert known == {}
    write_manifest(images, tmp_path / "second.json", known=known)
    (entry,) = iter_manifest_images(tmp_path / "second.json")
    assert entry["sha256"] == hashlib.sha256(bytes(data)).hexdigest()

    document["scan_started_ns"] = info.st_mtime_ns + 60 * 10**9  # the scan a minute after the write: trusted
    (tmp_path / "settled.json").write_text(json.dumps(document))
    assert list(previous_entries(tmp_path / "settled.json", images)) == ["PROD-1.jpg"]
    del document["scan_started_ns"]
    (tmp_path / "untimed.json").write_text(json.dumps(document))
    assert previous_entries(tmp_path / "untimed.json", images) == {}


def test_date_folders_holding_only_hidden_files_give_an_empty_manifest_not_an_error(tmp_path):
    """A day whose folder holds only a .DS_Store holds no images: the run still publishes the catalog's changes."""
    (tmp_path / "images" / "2025-06-01").mkdir(parents=True)
    (tmp_path / "images" / "2025-06-01" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")

    summary = write_manifest(tmp_path / "images", tmp_path / "manifest.json", subdirs=["2025-06-01"])

    assert (summary.total_images, summary.skipped_files) == (0, 1)
    (tmp_path / "images" / "2025-06-01" / "PROD-1.jpg").write_text("not an image")
    with pytest.raises(PublisherError, match="no images found"):  # a file that is not an image: say so
        write_manifest(tmp_path / "images", tmp_path / "manifest.json", subdirs=["2025-06-01"])
