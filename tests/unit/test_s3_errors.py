"""One classifier for S3 failures: real answers from a proxy in front of SeaweedFS, read by both clients
(obstore for uploads, listings and artifacts; botocore for anything through boto3).

Here what needs no server (no answer at all); the answers of a proxy in front of SeaweedFS are in
tests/integration/test_s3_errors_on_seaweedfs.py."""

from __future__ import annotations

import boto3
import botocore.exceptions
import obstore
import pytest

from devstack.embedded_stack import ACCESS_KEY, REGION, SECRET_KEY
from include.catalog_publisher.s3_errors import SERVICE, classify
from include.catalog_publisher.s3_store import S3Target, make_store
from tests.helpers import FAST_FAIL, unused_port


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    """Keys for the default chain, which make_store needs before it sends anything (in tests/integration the stack
    exports them); no server ever checks them here."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


def test_no_answer_is_service_trouble_for_both_clients():
    endpoint = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(Exception) as from_obstore:  # noqa: B017
        obstore.put(make_store(S3Target("b", endpoint), retry=FAST_FAIL), "k", b"x")
    keys = {"aws_access_key_id": "k", "aws_secret_access_key": "s"}
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **keys)
    with pytest.raises(botocore.exceptions.EndpointConnectionError) as from_botocore:
        client.list_objects_v2(Bucket="b")
    assert classify(from_obstore.value).kind == classify(from_botocore.value).kind == SERVICE
    assert classify(from_obstore.value).answered == "no answer"


def test_an_unreachable_endpoint_is_never_mistaken_for_a_denial():
    """The error text of an unreachable endpoint carries an elapsed time; digits like 403 in it are not a status."""
    from obstore.exceptions import GenericError

    from include.catalog_publisher.s3_store import describe_error

    text = (
        "Generic S3 error: Error performing GET http://127.0.0.1:1/b?list-type=2 in 140.3403ms, after 1 retries"
        " - HTTP error: error sending request"
    )
    assert describe_error(GenericError(text), S3Target("b", "http://127.0.0.1:1")).startswith(
        "cannot reach S3 for bucket 'b'"
    )
