"""S3 faults, produced for real: SeaweedFS killed mid-upload and restarted, S3 answering 503 SlowDown
(for a while, and for good), slow answers, and the upload process itself killed mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from devstack.embedded_stack import ACCESS_KEY, SECRET_KEY
from include.catalog_publisher import publisher_tasks
from include.catalog_publisher.batching import plan_batches
from include.catalog_publisher.errors import ServiceUnavailableError
from include.catalog_publisher.manifest import write_manifest
from include.catalog_publisher.run_artifacts import RunArtifacts
from include.catalog_publisher.s3_store import RETRY, S3Target, make_store
from include.catalog_publisher.upload import upload_batch_file
from include.catalog_publisher.url_mapping import build_url_mapping, iter_batch_results
from tests.helpers import fault_proxy, s3_client, write_image

SLOW_DOWN = (
    503,
    {"Content-Type": "application/xml"},
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
)


@pytest.fixture
def batch(own_stack, tmp_path):
    """A bucket, 200 images and the one batch file the planning step writes for them."""
    _, state = own_stack
    bucket = f"fault-{uuid.uuid4().hex[:8]}"
    s3_client(state).create_bucket(Bucket=bucket)
    root = tmp_path / "images"
    for i in range(200):
        write_image(root / f"PROD-{i:04d}.jpg", seed=i, side=48)
    write_manifest(root, tmp_path / "manifest.json")
    (planned,) = plan_batches(tmp_path / "manifest.json", tmp_path / "batches", max_images=1000)
    return {
        "bucket": bucket,
        "root": root,
        "batch_file": planned.path,
        "results": str(tmp_path / "results.json"),
        "ids": [f"PROD-{i:04d}" for i in range(200)],
    }


def store(target: S3Target):
    """The uploader's own store, signing with the stack's key pair."""
    import boto3

    return make_store(
        target, boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    )


def upload(target: S3Target, batch, concurrency: int = 4):
    """What upload_batch runs: the batch file to S3 through `target`, results and journal beside it."""
    return upload_batch_file(
        store(target), target, batch["batch_file"], str(batch["root"]), "p", batch["results"], concurrency=concurrency
    )


def slow(seconds: float):
    """A fault that delays every request and then forwards it: a slow S3."""

    def fault(method: str, path: str, headers: dict[str, str], body: bytes | None):
        time.sleep(seconds)
        return None

    return fault


def journal_lines(batch) -> int:
    try:
        return len(Path(batch["results"] + ".journal.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def assert_exact(state, batch, target: S3Target) -> None:
    """Every image is in the bucket whole (nothing partial, nothing extra) and the mapping is exact."""
    s3 = s3_client(state)
    keys = sorted(
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=batch["bucket"])
        for o in page.get("Contents", [])
    )
    assert keys == [f"p/{pid}.jpg" for pid in batch["ids"]]
    for pid in batch["ids"]:
        assert (
            s3.get_object(Bucket=batch["bucket"], Key=f"p/{pid}.jpg")["Body"].read()
            == (batch["root"] / f"{pid}.jpg").read_bytes()
        )
    mapping = build_url_mapping(iter_batch_results([batch["results"]]), target, "p")
    assert (mapping["total_images"], mapping["uploaded_images"], mapping["failed_images"]) == (200, 200, 0)
    assert sorted(mapping["product_to_s3_url"]) == batch["ids"]


@pytest.mark.fault(
    "S3 server killed mid-upload and restarted 2 s later",
    "the batch completes (in-flight retries, else the task's retry from its journal); "
    "every object whole, mapping exact",
)
def test_s3_killed_mid_upload_and_restarted(own_stack, batch):
    stack, state = own_stack
    with fault_proxy(state.s3_endpoint, slow(0.02)) as endpoint:
        target = S3Target(batch["bucket"], endpoint)
        attempt = {}

        worker = threading.Thread(target=lambda: attempt.update(outcome=upload(target, batch)))
        worker.start()
        wait_for(lambda: journal_lines(batch) >= 40, "40 images uploaded")
        stack.kill("seaweedfs")
        killed_at = journal_lines(batch)
        time.sleep(2)
        stack.revive("seaweedfs")
        worker.join(180)
        first = attempt["outcome"]
        assert killed_at < 200
        assert first.uploaded + first.retryable_failures == 200 and first.failed == first.retryable_failures
        if first.retryable_failures:  # what Airflow does next: the task's retry, resuming from the journal
            second = upload(target, batch)
            assert second.resumed == first.uploaded and second.uploaded == 200 and second.failed == 0
    assert_exact(state, batch, S3Target(batch["bucket"], state.s3_endpoint))


@pytest.mark.fault(
    "S3 throttling: every other request answered 503 SlowDown",
    "retried with backoff; every image uploaded once, mapping exact",
)
def test_throttling_is_retried_until_every_image_is_up(own_stack, batch):
    _, state = own_stack
    answered = {"throttled": 0, "puts": 0}
    lock = threading.Lock()

    def every_other_put(method: str, path: str, headers: dict[str, str], body: bytes | None):
        if method != "PUT":
            return None
        with lock:
            answered["puts"] += 1
            if answered["puts"] % 2:
                answered["throttled"] += 1
                return SLOW_DOWN
        return None

    with fault_proxy(state.s3_endpoint, every_other_put) as endpoint:
        target = S3Target(batch["bucket"], endpoint)
        outcome = upload(target, batch, concurrency=8)
    assert outcome.uploaded == 200 and outcome.failed == 0
    assert answered["throttled"] >= 100  # half the PUTs, retries included
    assert_exact(state, batch, S3Target(batch["bucket"], state.s3_endpoint))


@pytest.mark.fault(
    "S3 throttling that never ends (503 SlowDown to every upload)",
    "each image tried 1 + 6 times with backoff, then the task fails naming the count and the reason; "
    "a retry uploads only those",
)
def test_throttling_that_never_ends_fails_after_bounded_retries_with_a_clear_error(
    own_stack, batch, tmp_path, monkeypatch
):
    _, state = own_stack
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def always_slow_down(method: str, path: str, headers: dict[str, str], body: bytes | None):
        if method != "PUT":
            return None
        with lock:
            attempts[path] = attempts.get(path, 0) + 1
        return SLOW_DOWN

    two = json.loads(Path(batch["batch_file"]).read_text())
    two["images"] = two["images"][:2]
    Path(batch["batch_file"]).write_text(json.dumps(two))
    with fault_proxy(state.s3_endpoint, always_slow_down) as endpoint:
        connection = {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
        monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
        run = RunArtifacts("publish_product_images", "throttled")
        started = time.monotonic()
        with pytest.raises(
            ServiceUnavailableError,
            match=r"2 of 2 images in batch 0 failed with S3 errors .* a retry uploads only those",
        ):
            publisher_tasks.upload_batch(
                run,
                {"images_dir": str(batch["root"])},
                {"batch": 0, "path": batch["batch_file"], "images": 2, "bytes": 1},
                batch["bucket"],
                "p",
                2,
            )
        elapsed = time.monotonic() - started
    assert sorted(attempts.values()) == [1 + RETRY["max_retries"]] * 2  # bounded: the configured retries, no more
    assert elapsed < RETRY["retry_timeout"].total_seconds()
    results = json.loads(run.results(0).read_text())["results"]
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert all("SlowDown" in r["error"] or "503" in r["error"] for r in results), results


@pytest.mark.fault(
    "the upload task's process killed (SIGKILL) mid-batch",
    "the retry resumes from the journal: uploaded images are not sent again, the rest go up; mapping exact",
)
def test_an_upload_process_killed_mid_batch_resumes_from_its_journal(own_stack, batch):
    _, state = own_stack
    with fault_proxy(state.s3_endpoint, slow(0.02)) as endpoint:
        target = S3Target(batch["bucket"], endpoint)
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from include.catalog_publisher.s3_store import S3Target, make_store; "
                "from include.catalog_publisher.upload import upload_batch_file\n"
                "t = S3Target(sys.argv[1], sys.argv[2]); "
                "upload_batch_file(make_store(t), t, *sys.argv[3:7], concurrency=4)",
                batch["bucket"],
                endpoint,
                batch["batch_file"],
                str(batch["root"]),
                "p",
                batch["results"],
            ],  # fmt: skip
            env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        )
        wait_for(lambda: journal_lines(batch) >= 40 or child.poll() is not None, "40 images uploaded by the child")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        done_before = journal_lines(batch)
        assert 40 <= done_before < 200 and not Path(batch["results"]).exists()

        retry = upload(target, batch)
    assert retry.resumed >= done_before and retry.uploaded == 200 and retry.failed == 0
    assert_exact(state, batch, S3Target(batch["bucket"], state.s3_endpoint))
