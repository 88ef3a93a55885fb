"""Step 3: uploading a batch, against real SeaweedFS."""

from __future__ import annotations

import base64
import hashlib
import os
import time

import botocore.exceptions
import pytest

from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.manifest import scan_images
from include.catalog_publisher.s3_store import S3Target, make_store, object_key
from include.catalog_publisher.upload import summarize, upload_batch_file, upload_images
from tests.helpers import FAST_FAIL, IMAGE_FORMATS, fault_proxy, image_bytes, unused_port, write_image


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for i, fmt in enumerate(IMAGE_FORMATS):
        write_image(root / f"PROD-{i}.{fmt.lower()}", fmt, seed=i, side=40 + i)
    return root, [e for e in scan_images(root) if "skipped" not in e]


def test_every_image_lands_with_its_bytes_content_type_and_a_checksum(stack, s3, bucket, images):
    root, entries = images
    target = S3Target(bucket, stack.s3_endpoint)
    results = upload_images(make_store(target), target, entries, str(root), "products", concurrency=3)

    assert [r["status"] for r in results] == ["uploaded"] * len(entries)
    for entry, result in zip(entries, results, strict=True):
        assert result["key"] == f"products/{entry['file_name']}"
        obj = s3.get_object(Bucket=bucket, Key=result["key"], ChecksumMode="ENABLED")
        data = (root / entry["relative_path"]).read_bytes()
        assert obj["Body"].read() == data
        assert obj["ContentType"] == entry["content_type"]
        # The SHA-256 the uploader sent, stored by the server after it checked the body against it.
        assert obj["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert summarize(results).uploaded == len(entries)


@pytest.mark.fault(
    "an object body corrupted on the way (SHA-256 mismatch)", "S3 refuses it (BadDigest); nothing is stored"
)
def test_the_server_refuses_a_body_that_does_not_match_its_checksum(s3, bucket):
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError, match="BadDigest"):
        s3.put_object(Bucket=bucket, Key="corrupt.jpg", Body=b"these bytes", ChecksumSHA256=wrong)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


@pytest.mark.fault("the bucket does not exist", "one error naming the bucket, before any upload")
def test_missing_bucket_is_one_clear_error_before_any_upload(stack, images):
    root, entries = images
    target = S3Target("no-such-bucket-here", stack.s3_endpoint)
    with pytest.raises(
        PublisherError, match="bucket 'no-such-bucket-here' at http://127.0.0.1:[0-9]+ does not exist; create it"
    ) as caught:
        upload_images(make_store(target), target, entries, str(root), "products")
    assert not isinstance(caught.value, ServiceUnavailableError)  # retrying cannot create a bucket


@pytest.mark.fault("S3 unreachable", "a service error naming the endpoint (retried by Airflow)")
def test_unreachable_s3_is_a_service_error_naming_the_endpoint(stack, images):
    root, entries = images
    endpoint = f"http://127.0.0.1:{unused_port()}"
    target = S3Target("product-images", endpoint)
    with pytest.raises(
        ServiceUnavailableError, match=f"cannot reach S3 for bucket 'product-images' at {endpoint}.*AWS_ENDPOINT_URL"
    ):
        upload_images(make_store(target, retry=FAST_FAIL), target, entries, str(root), "products")


@pytest.mark.fault(
    "an image changed between the manifest and the upload",
    "that image fails alone, 'rebuild the manifest'; the others upload",
)
def test_a_file_changed_after_the_manifest_fails_alone_with_its_reason(stack, s3, bucket, images):
    root, entries = images
    (root / entries[0]["relative_path"]).write_bytes(b"\xff\xd8\xff replaced after the manifest")
    target = S3Target(bucket, stack.s3_endpoint)
    results = upload_images(make_store(target), target, entries, str(root), "")

    assert results[0]["status"] == "failed"
    assert results[0]["error"].endswith("file changed since the manifest was built; rebuild the manifest")
    assert results[0]["retryable"] is False
    assert [r["status"] for r in results[1:]] == ["uploaded"] * (len(entries) - 1)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {e["file_name"] for e in entries[1:]}  # no prefix: keys are the file names


def test_a_retried_batch_resumes_from_its_journal(stack, s3, bucket, images, tmp_path):
    root, entries = images
    target = S3Target(bucket, stack.s3_endpoint)
    journal = tmp_path / "journal.jsonl"
    upload_images(make_store(target), target, entries[:2], str(root), "p", journal=journal)
    first_modified = {
        k: s3.head_object(Bucket=bucket, Key=object_key("p", entries[k]["file_name"]))["LastModified"] for k in (0, 1)
    }

    results = upload_images(make_store(target), target, entries, str(root), "p", journal=journal)

    assert [r.get("resumed", False) for r in results] == [True, True] + [False] * (len(entries) - 2)
    assert all(r["status"] == "uploaded" for r in results)
    for k in (0, 1):  # not sent again
        assert (
            s3.head_object(Bucket=bucket, Key=object_key("p", entries[k]["file_name"]))["LastModified"]
            == first_modified[k]
        )


def test_upload_batch_file_writes_one_result_per_image(stack, bucket, images, tmp_path):
    import json

    root, entries = images
    batch_file = tmp_path / "batch.json"
    batch_file.write_text(json.dumps({"batch": 0, "images": entries}))
    target = S3Target(bucket, stack.s3_endpoint)
    outcome = upload_batch_file(
        make_store(target), target, str(batch_file), str(root), "products", str(tmp_path / "results.json")
    )

    written = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["product_id"] for r in written] == [e["product_id"] for e in entries]
    assert outcome.uploaded == len(entries) and outcome.failed == 0
    assert outcome.bytes == sum(e["file_size"] for e in entries)


def test_concurrency_must_be_positive(stack, bucket, images):
    root, entries = images
    target = S3Target(bucket, stack.s3_endpoint)
    with pytest.raises(PublisherError, match="concurrency must be at least 1"):
        upload_images(make_store(target), target, entries, str(root), "p", concurrency=0)


def test_a_second_upload_skips_unchanged_images_and_sends_exactly_the_changed_ones(stack, s3, bucket, tmp_path):
    from include.catalog_publisher.manifest import write_manifest
    from include.catalog_publisher.upload import upload_manifest
    from include.catalog_publisher.url_mapping import build_url_mapping, iter_batch_results

    root = tmp_path / "images"
    for i in range(12):
        write_image(root / f"PROD-{i:02d}.jpg", seed=i)
    target = S3Target(bucket, stack.s3_endpoint)

    def publish(work, force=False):
        write_manifest(root, tmp_path / "manifest.json")
        files = upload_manifest(
            make_store(target), target, tmp_path / "manifest.json", tmp_path / work, "p", batch_size=5, force=force
        )
        return build_url_mapping(iter_batch_results(files), target, "p")

    first = publish("w1")
    assert (first["uploaded_images"], first["skipped_images"]) == (12, 0)
    modified = {k: s3.head_object(Bucket=bucket, Key=f"p/PROD-{k:02d}.jpg")["LastModified"] for k in range(12)}

    second = publish("w2")
    assert (second["uploaded_images"], second["skipped_images"], second["failed_images"]) == (0, 12, 0)
    assert second["product_to_s3_url"] == first["product_to_s3_url"]  # unchanged images keep their URL

    time.sleep(1.1)  # LastModified has one-second resolution: step past it so a re-sent object would show
    for i in (1, 5, 9):
        write_image(root / f"PROD-{i:02d}.jpg", seed=100 + i)
    write_image(root / "PROD-03.jpg", seed=3, side=25)  # a different size
    third = publish("w3")
    assert (third["uploaded_images"], third["skipped_images"]) == (4, 8)
    for k in range(12):
        changed = k in (1, 3, 5, 9)
        assert (s3.head_object(Bucket=bucket, Key=f"p/PROD-{k:02d}.jpg")["LastModified"] != modified[k]) == changed
        assert (
            s3.get_object(Bucket=bucket, Key=f"p/PROD-{k:02d}.jpg")["Body"].read()
            == (root / f"PROD-{k:02d}.jpg").read_bytes()
        )

    forced = publish("w4", force=True)
    assert (forced["uploaded_images"], forced["skipped_images"]) == (12, 0)


def test_an_object_changed_in_the_bucket_is_uploaded_again(stack, s3, bucket, tmp_path):
    from include.catalog_publisher.manifest import write_manifest
    from include.catalog_publisher.upload import upload_manifest
    from include.catalog_publisher.url_mapping import build_url_mapping, iter_batch_results

    write_image(tmp_path / "images" / "PROD-1.jpg")
    write_manifest(tmp_path / "images", tmp_path / "manifest.json")
    target = S3Target(bucket, stack.s3_endpoint)
    s3.put_object(Bucket=bucket, Key="p/PROD-1.jpg", Body=b"\xff\xd8\xff other bytes of some other size")
    files = upload_manifest(make_store(target), target, tmp_path / "manifest.json", tmp_path / "w", "p", batch_size=5)
    assert build_url_mapping(iter_batch_results(files), target, "p")["uploaded_images"] == 1
    assert (
        s3.get_object(Bucket=bucket, Key="p/PROD-1.jpg")["Body"].read()
        == (tmp_path / "images" / "PROD-1.jpg").read_bytes()
    )


def test_a_same_size_rewrite_after_the_manifest_is_noticed_by_its_modification_time(stack, bucket, images):
    root, entries = images
    path = root / entries[1]["relative_path"]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    os.utime(path, ns=(entries[1]["mtime_ns"] + 10**9, entries[1]["mtime_ns"] + 10**9))
    target = S3Target(bucket, stack.s3_endpoint)
    results = upload_images(make_store(target), target, entries, str(root), "p")
    assert results[1]["status"] == "failed" and results[1]["error"].endswith(
        "file changed since the manifest was built; rebuild the manifest"
    )
    assert [r["status"] for i, r in enumerate(results) if i != 1] == ["uploaded"] * (len(entries) - 1)


@pytest.mark.fault("a 200 MB image", "uploaded as multipart, byte-identical")
def test_a_200_mb_image_goes_up_in_parts_and_arrives_whole(stack, s3, bucket, tmp_path):
    from include.catalog_publisher.upload import MULTIPART_THRESHOLD

    big = tmp_path / "images" / "PROD-BIG.jpg"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.write(image_bytes("JPEG", side=64))
        f.truncate(200 * 1024 * 1024)
    (entry,) = [e for e in scan_images(tmp_path / "images") if "skipped" not in e]
    assert entry["file_size"] > MULTIPART_THRESHOLD
    target = S3Target(bucket, stack.s3_endpoint)

    (result,) = upload_images(make_store(target), target, [entry], str(tmp_path / "images"), "big")

    assert result["status"] == "uploaded"
    obj = s3.get_object(Bucket=bucket, Key="big/PROD-BIG.jpg")
    digest = hashlib.sha256()
    for chunk in obj["Body"].iter_chunks(1024 * 1024):
        digest.update(chunk)
    assert obj["ContentLength"] == entry["file_size"] and digest.hexdigest() == entry["sha256"]
    assert obj["ContentType"] == "image/jpeg"
    assert "-" in obj["ETag"]  # a multipart ETag: it went up in parts


@pytest.mark.fault(
    "the bucket vanishes mid-batch (S3 answers 404 NoSuchBucket to the uploads after the bucket check passed)",
    "one user error naming the bucket, the other images not attempted; not retried (a retry cannot create it)",
)
def test_a_bucket_that_vanishes_mid_batch_fails_at_once_as_a_user_error(stack, bucket, tmp_path):
    from tests.helpers import fault_proxy

    for i in range(12):
        write_image(tmp_path / "images" / f"PROD-{i}.jpg", seed=i)
    entries = [e for e in scan_images(tmp_path / "images") if "skipped" not in e]
    puts = []
    body = "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>"

    def gone(method, path, headers, payload):
        if method != "PUT":
            return None
        puts.append(path)
        return 404, {"Content-Type": "application/xml"}, body.encode()

    with fault_proxy(stack.s3_endpoint, gone) as endpoint:
        target = S3Target(bucket, endpoint)
        expected = f"bucket '{bucket}' at .* does not exist; create it or pass the right bucket name"
        with pytest.raises(PublisherError, match=expected) as caught:
            upload_images(make_store(target), target, entries, str(tmp_path / "images"), "p", concurrency=2)
    assert not isinstance(caught.value, ServiceUnavailableError)
    assert 1 <= len(puts) <= 2  # the ones in flight when the first answer came; the rest were not sent


@pytest.mark.fault(
    "objects deleted or overwritten in the bucket between two attempts of a batch (journaled as uploaded)",
    "the retry confirms each journaled object (a HEAD: its ETag) and uploads those two again; the rest resume",
)
def test_a_resumed_batch_uploads_again_what_the_bucket_no_longer_holds(stack, s3, bucket, images, tmp_path):
    root, entries = images
    target = S3Target(bucket, stack.s3_endpoint)
    journal = tmp_path / "journal.jsonl"
    first = upload_images(make_store(target), target, entries, str(root), "p", journal=journal)
    assert [r["status"] for r in first] == ["uploaded"] * len(entries)
    s3.delete_object(Bucket=bucket, Key=object_key("p", entries[0]["file_name"]))
    s3.put_object(Bucket=bucket, Key=object_key("p", entries[1]["file_name"]), Body=b"someone else's bytes")

    again = upload_images(make_store(target), target, entries, str(root), "p", journal=journal)

    assert [r.get("resumed", False) for r in again] == [False, False] + [True] * (len(entries) - 2)
    assert all(r["status"] == "uploaded" for r in again)
    for entry in entries:
        stored = s3.get_object(Bucket=bucket, Key=object_key("p", entry["file_name"]))["Body"].read()
        assert stored == (root / entry["relative_path"]).read_bytes()


class BodiesAwaitingAnswers:
    """A fault_proxy hook that holds each PUT `hold` seconds before forwarding it, and records the most bytes of
    PUT bodies (whole objects and multipart parts) held unanswered at once. The uploader holds a body until S3
    answered it, so that peak is a floor of the bytes it held at that moment, measured outside the process."""

    def __init__(self, hold: float = 0.2) -> None:
        import threading

        self.hold, self.now, self.peak, self.puts = hold, 0, 0, 0
        self.lock = threading.Lock()

    def __call__(self, method, path, headers, payload):
        if method != "PUT":
            return None
        with self.lock:
            self.now += len(payload or b"")
            self.peak, self.puts = max(self.peak, self.now), self.puts + 1
        time.sleep(self.hold)
        with self.lock:
            self.now -= len(payload or b"")
        return None


def write_sized_image(path, size: int) -> None:
    """A JPEG of exactly `size` bytes (a real header, then random bytes the scan accepts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = image_bytes("JPEG", side=64)
    path.write_bytes(head + os.urandom(size - len(head)))


def test_the_bytes_in_flight_are_bounded_not_the_concurrency_times_the_file_size(stack, bucket, tmp_path):
    """With a budget of 16 MB, the bodies S3 holds unanswered at once never add up to more, whatever the
    concurrency (32 x 2 MB would be 64 MB); with the default budget they do go past it."""
    from include.catalog_publisher.upload import MIN_BYTES_IN_FLIGHT

    for i in range(24):
        write_sized_image(tmp_path / "images" / f"PROD-{i:02d}.jpg", 2 * 1024 * 1024)
    entries = [e for e in scan_images(tmp_path / "images") if "skipped" not in e]
    bodies = BodiesAwaitingAnswers()

    with fault_proxy(stack.s3_endpoint, bodies) as endpoint:
        target = S3Target(bucket, endpoint)
        images_dir = str(tmp_path / "images")
        store = make_store(target)
        results = upload_images(store, target, entries, images_dir, "p", concurrency=32, max_bytes=MIN_BYTES_IN_FLIGHT)
        assert [r["status"] for r in results] == ["uploaded"] * len(entries)
        assert bodies.puts == 24 and 2 * 1024 * 1024 < bodies.peak <= MIN_BYTES_IN_FLIGHT
        bodies.peak = 0
        upload_images(make_store(target), target, entries, images_dir, "q", concurrency=32)
        assert bodies.peak > MIN_BYTES_IN_FLIGHT  # the default budget (256 MB) is not what limited it


def test_a_streamed_file_keeps_its_parts_in_flight_within_the_budget(stack, s3, bucket, tmp_path):
    """A 48 MB file and six 3 MB ones under a 16 MB budget: the stream sends one 8 MB part at a time and the small
    files wait for room, so S3 never holds more than 16 MB of their bodies at once; with room for 40 MB the same
    stream sends four parts at once (32 MB)."""
    from include.catalog_publisher.upload import MIN_BYTES_IN_FLIGHT, MULTIPART_THRESHOLD

    images = tmp_path / "images"
    write_sized_image(images / "PROD-BIG.jpg", 48 * 1024 * 1024)
    for i in range(6):
        write_sized_image(images / f"PROD-{i}.jpg", 3 * 1024 * 1024)
    entries = [e for e in scan_images(images) if "skipped" not in e]
    assert sum(e["file_size"] > MULTIPART_THRESHOLD for e in entries) == 1
    bodies = BodiesAwaitingAnswers()

    with fault_proxy(stack.s3_endpoint, bodies) as endpoint:
        target = S3Target(bucket, endpoint)
        results = upload_images(
            make_store(target), target, entries, str(images), "p", concurrency=32, max_bytes=MIN_BYTES_IN_FLIGHT
        )
        assert [r["status"] for r in results] == ["uploaded"] * len(entries)
        assert bodies.puts == 6 + 6 and bodies.peak <= MIN_BYTES_IN_FLIGHT
        bodies.peak = 0
        big = [e for e in entries if e["file_name"] == "PROD-BIG.jpg"]
        upload_images(make_store(target), target, big, str(images), "q", max_bytes=40 * 1024 * 1024)
        assert MIN_BYTES_IN_FLIGHT < bodies.peak <= 4 * 8 * 1024 * 1024

    obj = s3.get_object(Bucket=bucket, Key="p/PROD-BIG.jpg")
    assert "-" in obj["ETag"] and hashlib.sha256(obj["Body"].read()).hexdigest() == big[0]["sha256"]


def test_the_bytes_in_flight_setting_must_be_a_number(stack, bucket, images, monkeypatch):
    root, entries = images
    monkeypatch.setenv("PUBLISHER_UPLOAD_MAX_INFLIGHT_MB", "lots")
    target = S3Target(bucket, stack.s3_endpoint)
    with pytest.raises(PublisherError, match="PUBLISHER_UPLOAD_MAX_INFLIGHT_MB='lots' is not a number of at least 16"):
        upload_images(make_store(target), target, entries, str(root), "p")


@pytest.mark.fault(
    "PUBLISHER_UPLOAD_MAX_INFLIGHT_MB below what one file needs held at once (16 MB: a file sent in one PUT, "
    "or a streamed file's part being sent and the next one read)",
    "one error naming the setting and its 16 MB floor, before any upload",
)
def test_a_bytes_in_flight_setting_below_what_one_file_needs_is_refused(stack, s3, bucket, images, monkeypatch):
    root, entries = images
    target = S3Target(bucket, stack.s3_endpoint)
    for value in ("1", "15.5", "nan", "inf"):
        monkeypatch.setenv("PUBLISHER_UPLOAD_MAX_INFLIGHT_MB", value)
        expected = rf"PUBLISHER_UPLOAD_MAX_INFLIGHT_MB='{value}' is not a number of at least 16; fix it or unset it"
        with pytest.raises(PublisherError, match=expected):
            upload_images(make_store(target), target, entries, str(root), "p")
    with pytest.raises(PublisherError, match="a byte budget of 1048576 is below 16777216 bytes, what one file needs"):
        upload_images(make_store(target), target, entries, str(root), "p", max_bytes=1024 * 1024)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    monkeypatch.setenv("PUBLISHER_UPLOAD_MAX_INFLIGHT_MB", "16")  # the floor itself is enough
    results = upload_images(make_store(target), target, entries, str(root), "p")
    assert [r["status"] for r in results] == ["uploaded"] * len(entries)


def test_files_are_read_in_worker_threads_never_on_the_event_loop(stack, bucket, images):
    """Every open of an image during the upload happens off the thread that runs the event loop (a slow
    or network filesystem then stalls one read thread, not every upload in flight)."""
    import sys
    import threading

    root, entries = images
    opened: list[str] = []
    watching = {"on": True}
    images_dir = str(root)

    def audit(event, args):
        if watching["on"] and event == "open" and isinstance(args[0], str) and args[0].startswith(images_dir):
            opened.append(threading.current_thread().name)

    sys.addaudithook(audit)  # audit hooks cannot be removed: it stops listening below
    target = S3Target(bucket, stack.s3_endpoint)
    try:
        results = upload_images(make_store(target), target, entries, images_dir, "threads", concurrency=4)
    finally:
        watching["on"] = False
    assert [r["status"] for r in results] == ["uploaded"] * len(entries)
    assert len(opened) == len(entries)
    assert all(name.startswith("upload-read") for name in opened), opened


def _count_opens(path):
    """Linux inotify on one file: a function that returns how many times anyone opened it since."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    in_open, in_close_nowrite = 0x20, 0x10
    fd = libc.inotify_init1(os.O_NONBLOCK)
    # Closes are watched too: inotify merges an event into an identical unread one, so two opens in a row
    # would read as one; an open, a close and an open do not.
    assert fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(path), in_open | in_close_nowrite) >= 0

    def opens() -> int:
        count = 0
        try:
            while data := os.read(fd, 65536):
                offset = 0
                while offset < len(data):
                    mask = int.from_bytes(data[offset + 4 : offset + 8], "little")
                    name_len = int.from_bytes(data[offset + 12 : offset + 16], "little")
                    count += bool(mask & in_open)
                    offset += 16 + name_len
        except BlockingIOError:
            pass
        os.close(fd)
        return count

    return opens


def test_a_large_file_is_streamed_from_the_descriptor_that_was_checked(stack, s3, bucket, tmp_path):
    """A file above the multipart threshold is opened once, by the check (no symlink, inside the folder, the
    manifest's size and mtime), and its parts are read from that descriptor: it is never opened again by path."""
    from include.catalog_publisher.upload import MULTIPART_THRESHOLD

    big = tmp_path / "images" / "PROD-LARGE.jpg"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.write(image_bytes("JPEG", side=64))
        f.seek(MULTIPART_THRESHOLD + 3 * 1024 * 1024)
        f.write(b"end")
    (entry,) = [e for e in scan_images(tmp_path / "images") if "skipped" not in e]
    target = S3Target(bucket, stack.s3_endpoint)
    opens = _count_opens(big)

    (result,) = upload_images(make_store(target), target, [entry], str(tmp_path / "images"), "big")

    assert result["status"] == "uploaded"
    assert opens() == 1
    obj = s3.get_object(Bucket=bucket, Key="big/PROD-LARGE.jpg")
    assert obj["ContentLength"] == entry["file_size"]
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == entry["sha256"]
    assert "-" in obj["ETag"]


def test_files_up_to_the_multipart_threshold_go_up_in_one_put_with_an_md5_etag(stack, s3, bucket, tmp_path):
    """An 8 MB image is one PUT, so its ETag is its MD5 and the next run recognises it unchanged."""
    path = tmp_path / "images" / "PROD-8MB.jpg"
    path.parent.mkdir()
    path.write_bytes(image_bytes("JPEG", side=64) + os.urandom(8 * 1024 * 1024))
    (entry,) = [e for e in scan_images(tmp_path / "images") if "skipped" not in e]
    target = S3Target(bucket, stack.s3_endpoint)
    upload_images(make_store(target), target, [entry], str(tmp_path / "images"), "p")
    etag = s3.head_object(Bucket=bucket, Key="p/PROD-8MB.jpg")["ETag"].strip('"')
    assert etag == hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
