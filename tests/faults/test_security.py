"""Security against a SeaweedFS that enforces credentials (as AWS does) and has a local KMS: wrong keys
refused by name, objects private, server-side encryption SSE-S3 and SSE-KMS applied for real."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import pytest

from devstack.embedded_stack import ACCESS_KEY, REGION, SECRET_KEY, EmbeddedStack
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import scan_images, write_manifest
from include.catalog_publisher.s3_store import Encryption, S3Target, make_store
from include.catalog_publisher.upload import upload_images
from tests.helpers import FAST_FAIL, write_image

RIGHT = boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    stack = EmbeddedStack(tmp_path_factory.mktemp("guarded-stack"), bucket="guarded", enforce_credentials=True)
    state = stack.start()
    yield state
    stack.stop()


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    for i in range(3):
        write_image(root / f"PROD-{i}.jpg", seed=i)
    return root, [e for e in scan_images(root) if "skipped" not in e]


def admin(state):
    return RIGHT.client("s3", endpoint_url=state.s3_endpoint)


@pytest.mark.fault(
    "wrong S3 credentials against SeaweedFS with enforced credentials",
    "refused with 'S3 rejected the credentials', naming what to check; nothing uploaded",
)
def test_wrong_credentials_are_refused_with_a_clear_message(guarded, images):
    root, entries = images
    target = S3Target("guarded", guarded.s3_endpoint)
    wrong = boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key="not-the-secret", region_name=REGION)
    with pytest.raises(
        PublisherError,
        match=(
            "S3 rejected the credentials for bucket 'guarded' at .*"
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the aws_default connection"
        ),
    ):
        upload_images(make_store(target, wrong, retry=FAST_FAIL), target, entries, str(root), "wrong")
    assert admin(guarded).list_objects_v2(Bucket="guarded", Prefix="wrong/").get("KeyCount", 0) == 0


@pytest.mark.fault(
    "an anonymous GET of an uploaded image", "refused (403): objects get no ACL and stay as private as the bucket"
)
def test_uploaded_objects_are_private(guarded, images):
    root, entries = images
    target = S3Target("guarded", guarded.s3_endpoint)
    assert [r["status"] for r in upload_images(make_store(target, RIGHT), target, entries, str(root), "private")] == [
        "uploaded"
    ] * 3
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{guarded.s3_endpoint}/guarded/private/PROD-0.jpg", timeout=10)
    assert refused.value.code == 403
    assert (
        admin(guarded).get_object(Bucket="guarded", Key="private/PROD-0.jpg")["Body"].read()
        == (root / "PROD-0.jpg").read_bytes()
    )


@pytest.mark.parametrize(
    ("encryption", "expected"),
    [
        (Encryption("AES256"), ("AES256", None)),
        (Encryption("aws:kms", "catalog-images-key"), ("aws:kms", "catalog-images-key")),
    ],
    ids=["sse-s3", "sse-kms"],
)
def test_server_side_encryption_is_applied_to_every_object(guarded, images, encryption, expected):
    root, entries = images
    target = S3Target("guarded", guarded.s3_endpoint)
    prefix = f"sse-{encryption.algorithm.replace(':', '-')}"
    results = upload_images(make_store(target, RIGHT, encryption=encryption), target, entries, str(root), prefix)
    assert [r["status"] for r in results] == ["uploaded"] * 3
    for entry in entries:
        head = admin(guarded).head_object(Bucket="guarded", Key=f"{prefix}/{entry['file_name']}")
        assert head["ServerSideEncryption"] == expected[0]
        if expected[1]:
            assert expected[1] in head["SSEKMSKeyId"]
        body = admin(guarded).get_object(Bucket="guarded", Key=f"{prefix}/{entry['file_name']}")["Body"].read()
        assert body == (root / entry["relative_path"]).read_bytes()


@pytest.mark.fault(
    "contradictory encryption options (a KMS key id without aws:kms, an unknown algorithm)",
    "one error naming the option and the fix, before any upload",
)
@pytest.mark.parametrize(
    ("encryption", "message"),
    [
        (Encryption(None, "some-key"), "a KMS key id needs server-side encryption aws:kms"),
        (Encryption("AES256", "some-key"), "a KMS key id goes with server-side encryption aws:kms, not AES256"),
        (Encryption("ROT13"), "'ROT13' is not one of AES256, aws:kms"),
    ],
)
def test_contradictory_encryption_options_are_refused(guarded, encryption, message):
    with pytest.raises(PublisherError, match=message):
        make_store(S3Target("guarded", guarded.s3_endpoint), RIGHT, encryption=encryption)


def test_the_runbook_upload_takes_the_encryption_flags(guarded, images, tmp_path):
    root, _ = images
    write_manifest(root, tmp_path / "manifest.json")
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }
    command = [
        sys.executable,
        str(project_root() / "scripts/s3/upload_to_s3.py"),
        "--manifest-file",
        str(tmp_path / "manifest.json"),
    ]
    command += [
        "--bucket-name",
        "guarded",
        "--prefix",
        "runbook-sse",
        "--endpoint-url",
        guarded.s3_endpoint,
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        "runbook-key",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "s3_url_mapping.json").read_text())["uploaded_images"] == 3
    assert (
        admin(guarded).head_object(Bucket="guarded", Key="runbook-sse/PROD-1.jpg")["ServerSideEncryption"] == "aws:kms"
    )
