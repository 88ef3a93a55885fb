"""The S3 classifier on real answers: a proxy in front of SeaweedFS answering as the test asks, read by both clients."""

from __future__ import annotations

import boto3
import botocore.config
import botocore.exceptions
import obstore
import pytest

from devstack.embedded_stack import ACCESS_KEY, REGION, SECRET_KEY
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.s3_errors import CONFIG, OBJECT, SERVICE, classify
from include.catalog_publisher.s3_store import S3Target, check_bucket, iter_objects, make_store
from tests.helpers import FAST_FAIL, fault_proxy

XML = {"Content-Type": "application/xml"}
ANSWERS = [
    (500, "InternalError", SERVICE),
    (503, "SlowDown", SERVICE),
    (503, "ServiceUnavailable", SERVICE),
    (429, "TooManyRequests", SERVICE),
    (400, "RequestTimeout", SERVICE),
    (400, "ExpiredToken", SERVICE),
    (400, "BadDigest", SERVICE),
    (403, "AccessDenied", OBJECT),
    (403, "KMS.AccessDeniedException", OBJECT),
    (400, "KMS.DisabledException", OBJECT),
    (400, "InvalidRequest", OBJECT),
    (412, "PreconditionFailed", OBJECT),
    (404, "NoSuchBucket", CONFIG),
    (403, "InvalidAccessKeyId", CONFIG),
    (403, "SignatureDoesNotMatch", CONFIG),
    (301, "PermanentRedirect", CONFIG),
]


def answering(status: int, code: str):
    body = f"<Error><Code>{code}</Code><Message>as the test asked</Message></Error>".encode()
    return lambda method, path, headers, payload: (status, XML, body) if method == "PUT" else None


@pytest.mark.parametrize(("status", "code", "kind"), ANSWERS, ids=[f"{s}-{c}" for s, c, _ in ANSWERS])
def test_both_clients_answers_are_classified_alike(stack, bucket, status, code, kind):
    with fault_proxy(stack.s3_endpoint, answering(status, code)) as endpoint:
        target = S3Target(bucket, endpoint)
        with pytest.raises(Exception) as from_obstore:  # noqa: B017 - obstore raises its own types and builtins alike
            obstore.put(make_store(target, retry=FAST_FAIL), "k.jpg", b"\xff\xd8\xff")
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        with pytest.raises(botocore.exceptions.ClientError) as from_botocore:
            client.put_object(Bucket=bucket, Key="k.jpg", Body=b"\xff\xd8\xff")
    assert classify(from_botocore.value).code == code
    for caught in (from_obstore.value, from_botocore.value):
        assert classify(caught).kind == kind, (type(caught), str(caught)[:300])


@pytest.mark.fault(
    "S3 answering 500 InternalError / 503 SlowDown to every LIST after the client's retries (planning, bucket check)",
    "ServiceUnavailableError naming the answer: Airflow retries the task (it is not failed as a user error)",
)
@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown")])
def test_a_listing_s3_cannot_serve_is_retried_by_airflow_not_failed(stack, bucket, status, code):
    body = f"<Error><Code>{code}</Code><Message>try later</Message></Error>".encode()

    def every_list(method, path, headers, payload):
        return (status, {"Content-Type": "application/xml"}, body) if method == "GET" else None

    with fault_proxy(stack.s3_endpoint, every_list) as endpoint:
        target = S3Target(bucket, endpoint)
        store = make_store(target, retry=FAST_FAIL)
        expected = f"S3 could not serve bucket '{bucket}' at .*\\({status} {code}\\) after the client's retries"
        with pytest.raises(ServiceUnavailableError, match=expected):
            check_bucket(store, target)
        with pytest.raises(ServiceUnavailableError, match=f"{status} {code}"):
            list(iter_objects(store, target, ["products"]))


@pytest.mark.fault(
    "S3 answering 403 AccessDenied to the bucket listing",
    "a user error naming the bucket and the credentials to check; failed at once, not retried",
)
def test_a_denied_listing_is_a_user_error(stack, bucket):
    body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    with fault_proxy(stack.s3_endpoint, lambda m, p, h, b: (403, XML, body) if m == "GET" else None) as endpoint:
        target = S3Target(bucket, endpoint)
        expected = f"access to bucket '{bucket}' at .* was denied \\(403 AccessDenied\\)"
        with pytest.raises(PublisherError, match=expected) as caught:
            check_bucket(make_store(target, retry=FAST_FAIL), target)
    assert not isinstance(caught.value, ServiceUnavailableError)
