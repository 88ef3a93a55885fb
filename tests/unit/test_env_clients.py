"""The runbook scripts' S3 endpoint, from the environment and the AWS config as botocore orders them."""

from __future__ import annotations

import os

import pytest

from include.catalog_publisher import env_clients
from include.catalog_publisher.errors import PublisherError


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Only what each case sets: no caller's AWS_* variables, a config file of our own."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:7001\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    return monkeypatch


@pytest.mark.parametrize(
    ("settings", "endpoint"),
    [
        ({}, "http://127.0.0.1:7001"),  # the profile's endpoint_url (botocore resolves it)
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:7002"}, "http://127.0.0.1:7002"),
        (
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:7002", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:7003/"},
            "http://127.0.0.1:7003",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:7002", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, None),
        ({"AWS_ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com"}, None),  # AWS itself
    ],
)
def test_the_endpoint_follows_botocores_order(aws_env, settings, endpoint):
    for name, value in settings.items():
        aws_env.setenv(name, value)
    target, _ = env_clients.s3_store("bucket")
    assert target.endpoint == endpoint
    assert target.region == "eu-west-1"


def test_ignoring_configured_endpoints_in_the_profile_ignores_the_environments_too(aws_env, tmp_path):
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-1\nignore_configured_endpoint_urls = true\n")
    aws_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:7002")
    target, _ = env_clients.s3_store("bucket")
    assert target.endpoint is None


@pytest.mark.fault("AWS_ENDPOINT_URL without a scheme (host:port)", "one error naming it, before any request")
def test_an_endpoint_that_is_no_url_is_one_clear_error(aws_env):
    aws_env.setenv("AWS_ENDPOINT_URL", "127.0.0.1:7002")
    with pytest.raises(
        PublisherError, match="'127.0.0.1:7002' is not an http:// or https:// URL; fix AWS_ENDPOINT_URL"
    ):
        env_clients.s3_store("bucket")
