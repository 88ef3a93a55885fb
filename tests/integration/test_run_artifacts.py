"""A run's artifacts on object storage (SeaweedFS through the aws_default connection) and on local disk."""

from __future__ import annotations

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.run_artifacts import RunArtifacts, fetch_artifact, run_folder


def test_object_storage_artifacts_round_trip_between_two_working_folders(stack, s3, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", f"s3://{bucket}/team/runs/")
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path / "worker-a"))
    writer = RunArtifacts("publish_product_images", "run 1")
    writer.results(3).parent.mkdir(parents=True)
    writer.results(3).write_text('{"results": []}')
    location = writer.save(writer.results(3))
    folder = run_folder("publish_product_images", "run 1")  # publish_product_images/run_1-<hash>
    assert location == f"s3://{bucket}/team/runs/{folder}/results/batch-00003.json"
    assert s3.get_object(Bucket=bucket, Key=f"team/runs/{folder}/results/batch-00003.json")["Body"].read() == (
        b'{"results": []}'
    )

    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path / "worker-b"))  # another worker, another disk
    reader = RunArtifacts("publish_product_images", "run 1")
    local = reader.fetch(location)
    assert local == tmp_path / "worker-b" / "data" / "work" / folder / "results" / "batch-00003.json"
    assert local.read_text() == '{"results": []}'
    assert reader.fetch(reader.location(reader.unchanged), missing_ok=True) is None
    with pytest.raises(PublisherError, match=r"artifact s3://.*/results/unchanged.json does not exist"):
        reader.fetch(reader.location(reader.unchanged))

    latest = writer.publish_latest(writer.results(3), "data/s3_url_mapping.json")
    assert latest == f"s3://{bucket}/team/runs/publish_product_images/latest/s3_url_mapping.json"


def test_an_input_given_as_an_s3_url_is_downloaded(stack, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="exports/products.json", Body=b"[]")
    assert fetch_artifact(f"s3://{bucket}/exports/products.json", tmp_path).read_bytes() == b"[]"
    with pytest.raises(PublisherError, match="does not exist"):
        fetch_artifact(f"s3://{bucket}/exports/missing.json", tmp_path)


def test_a_missing_artifact_bucket_and_a_malformed_location_are_named(stack, tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    run = RunArtifacts("publish_product_images", "r", "s3://no-such-artifact-bucket/runs")
    run.manifest.parent.mkdir(parents=True)
    run.manifest.write_text("{}")
    with pytest.raises(
        PublisherError,
        match=(
            r"cannot store artifact s3://no-such-artifact-bucket/.*bucket 'no-such-artifact-bucket'"
            r".*(does not exist|check that the bucket exists)"
        ),
    ):
        run.save(run.manifest)
    with pytest.raises(PublisherError, match="is not an s3://bucket/prefix URL"):
        RunArtifacts("publish_product_images", "r", "s3://")


XML = {"Content-Type": "application/xml"}


def _artifact_store_answering(stack, monkeypatch, answer):
    """Point aws_default (the artifacts' connection) at a proxy in front of SeaweedFS that lets `answer` reply."""
    import contextlib
    import json

    from tests.helpers import fault_proxy

    @contextlib.contextmanager
    def proxied():
        with fault_proxy(stack.s3_endpoint, answer) as endpoint:
            connection = json.loads(stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])
            connection["extra"]["endpoint_url"] = endpoint
            monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
            yield

    return proxied()


@pytest.mark.fault(
    "the artifact store (PUBLISHER_ARTIFACTS_URL) answering 503 SlowDown to every write and read, after retries",
    "ServiceUnavailableError naming the artifact and the answer: Airflow retries the task, not failed as a user error",
)
def test_an_artifact_store_that_cannot_serve_is_retried_by_airflow(stack, s3, bucket, tmp_path, monkeypatch):
    from include.catalog_publisher.errors import ServiceUnavailableError
    from include.catalog_publisher.s3_store import RETRY

    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    monkeypatch.setitem(RETRY, "max_retries", 1)  # the same classification after 1 retry as after 6, in a second
    with _artifact_store_answering(stack, monkeypatch, lambda m, p, h, b: (503, XML, body)):
        run = RunArtifacts("publish_product_images", "throttled", f"s3://{bucket}/runs")
        run.manifest.parent.mkdir(parents=True)
        run.manifest.write_text("{}")
        expected = r"cannot store artifact s3://.*s3_upload_manifest.json: S3 could not serve .*\(503 SlowDown\)"
        with pytest.raises(ServiceUnavailableError, match=expected):
            run.save(run.manifest)
        with pytest.raises(ServiceUnavailableError, match=r"cannot read artifact .*\(503 SlowDown\)"):
            run.fetch(run.location(run.manifest))


@pytest.mark.fault(
    "the artifact store refusing the credentials' access (403 AccessDenied)",
    "a user error naming the artifact and what to check; failed at once, not retried",
)
def test_an_artifact_store_that_denies_access_is_a_user_error(stack, bucket, tmp_path, monkeypatch):
    from include.catalog_publisher.errors import ServiceUnavailableError

    body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    with _artifact_store_answering(stack, monkeypatch, lambda m, p, h, b: (403, XML, body)):
        run = RunArtifacts("publish_product_images", "denied", f"s3://{bucket}/runs")
        run.manifest.parent.mkdir(parents=True)
        run.manifest.write_text("{}")
        with pytest.raises(PublisherError, match=r"cannot store artifact .*was denied \(403 AccessDenied\)") as caught:
            run.save(run.manifest)
    assert not isinstance(caught.value, ServiceUnavailableError)


def test_whether_a_run_saved_an_artifact_is_known_on_both_stores(stack, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    for location in (str(tmp_path / "runs"), f"s3://{bucket}/runs"):
        run = RunArtifacts("publish_product_images", "r", location)
        assert not run.has(run.manifest)
        run.manifest.parent.mkdir(parents=True, exist_ok=True)
        run.manifest.write_text("{}")
        run.save(run.manifest)
        assert run.has(run.manifest)
