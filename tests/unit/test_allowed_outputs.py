"""What a run may write (allowed_outputs.py): the deployment's entries, their wildcards and prefixes, the default
(exactly the configured bucket, topic and index), the deletions ceiling, and a malformed setting named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from include.catalog_publisher import allowed_outputs
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.errors import PublisherError


@pytest.fixture
def outputs(monkeypatch):
    monkeypatch.delenv("PUBLISHER_ALLOWED_OUTPUTS", raising=False)
    monkeypatch.delenv("PUBLISHER_MAX_DELETIONS", raising=False)
    monkeypatch.setenv("PUBLISHER_BUCKET", "shop-images")
    return monkeypatch


def refused(what: str) -> str:
    return (
        rf"{what} is outside the allowed outputs \(.*\); .* add it to PUBLISHER_ALLOWED_OUTPUTS .* Nothing was written"
    )


def test_by_default_only_the_configured_bucket_prefix_topic_and_index(outputs):
    allowed_outputs.check_publisher(
        {"bucket": "shop-images", "prefix": "products", "topic": "products", "max_deletions": 1000}
    )
    allowed_outputs.check_bucket("shop-images", "products/2025")  # below the prefix
    allowed_outputs.check_index("products")
    for check, args, what in [
        (allowed_outputs.check_bucket, ("other-bucket", "products"), "bucket 'other-bucket' with prefix 'products'"),
        (allowed_outputs.check_bucket, ("shop-images", ""), "bucket 'shop-images' with prefix ''"),
        (allowed_outputs.check_bucket, ("shop-images", "products2"), "bucket 'shop-images' with prefix 'products2'"),
        (allowed_outputs.check_topic, ("orders",), "topic 'orders'"),
        (allowed_outputs.check_index, ("customers",), "index 'customers'"),
    ]:
        with pytest.raises(PublisherError, match=refused(what)):
            check(*args)


def test_listed_outputs_with_wildcards_and_whole_buckets(outputs):
    outputs.setenv(
        "PUBLISHER_ALLOWED_OUTPUTS", "s3://catalog-*/eu, s3://scratch, kafka://catalog.*, elasticsearch://cat-*"
    )
    allowed_outputs.check_bucket("catalog-prod", "eu/images")
    allowed_outputs.check_bucket("scratch", "")  # the whole bucket
    allowed_outputs.check_topic("catalog.eu")
    allowed_outputs.check_index("cat-v2")
    with pytest.raises(PublisherError, match=refused("bucket 'catalog-prod' with prefix 'us'")):
        allowed_outputs.check_bucket("catalog-prod", "us")
    with pytest.raises(PublisherError, match=refused("topic 'products'")):
        allowed_outputs.check_indexer({"index": "cat-v2"}, ["catalog.eu", "products"])


def test_max_deletions_cannot_exceed_the_deployments_ceiling(outputs):
    allowed_outputs.check_max_deletions(1000)
    with pytest.raises(
        PublisherError,
        match=r"max_deletions 1001 is above this deployment's ceiling of 1000 \(PUBLISHER_MAX_DELETIONS\)",
    ):
        allowed_outputs.check_max_deletions(1001)
    outputs.setenv("PUBLISHER_MAX_DELETIONS", "5")
    with pytest.raises(PublisherError, match="ceiling of 5"):
        allowed_outputs.check_max_deletions(6)
    outputs.setenv("PUBLISHER_MAX_DELETIONS", "lots")
    with pytest.raises(PublisherError, match=r"PUBLISHER_MAX_DELETIONS='lots' is not a whole number of at least 0"):
        allowed_outputs.check_max_deletions(1)


@pytest.mark.parametrize("entry", ["https://example.com/x", "kafka://topic/sub", "s3://", "products"])
def test_a_malformed_allowed_outputs_entry_is_named(outputs, entry):
    outputs.setenv("PUBLISHER_ALLOWED_OUTPUTS", f"kafka://products,{entry}")
    with pytest.raises(
        PublisherError, match=rf"PUBLISHER_ALLOWED_OUTPUTS='.*' is not a list of s3://bucket.*'{entry}' is not"
    ):
        allowed_outputs.check_topic("products")


def test_the_forms_max_deletions_default_is_never_above_the_ceiling():
    """The trigger form can be sent with its defaults: under a lower ceiling, the default is the ceiling."""
    read = "from include.catalog_publisher.params import publisher_params as p; print(p()['max_deletions'].value)"
    for ceiling, default in (("50", "50"), ("5000", "1000")):
        env = {**os.environ, "PUBLISHER_MAX_DELETIONS": ceiling}
        done = subprocess.run([sys.executable, "-c", read], env=env, cwd=project_root(), capture_output=True, text=True)
        assert done.stdout.strip() == default, done.stderr[-2000:]
