"""`make demo` in the shells users have: an AWS user's keys and profile, their Kafka, Elasticsearch and
Airflow settings, and a stack service that cannot start. The demo runs from a fresh copy of the project,
as a new clone would, so the checkout's own data/, .stack/ and .airflow/ are never touched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from include.catalog_publisher.defaults import project_root

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYHOSTILEKEY"
# Everything a data-platform engineer's shell may carry, aimed at nothing (loopback port 9) or at nowhere.
HOSTILE = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7HOSTILE",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEHostileSessionToken",
    "AWS_PROFILE": "no-such-profile",
    "AWS_DEFAULT_PROFILE": "no-such-profile",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
    "AWS_DEFAULT_REGION": "ap-nowhere-1",
    "AWS_REGION": "ap-nowhere-1",
    "AWS_CA_BUNDLE": "/nonexistent/ca.pem",
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "KAFKA_CLIENT_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_CLIENT_SASL_MECHANISMS": "SCRAM-SHA-512",
    "KAFKA_CLIENT_SASL_PASSWORD": SECRET,
    "ELASTICSEARCH_URL": "https://127.0.0.1:9",
    "ELASTICSEARCH_API_KEY": SECRET,
    "ELASTICSEARCH_USERNAME": "elastic",
    "AIRFLOW_HOME": "/nonexistent/airflow",
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u:p@127.0.0.1:9/airflow",
    "AIRFLOW__CORE__DAGS_FOLDER": "/nonexistent/dags",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "True",
    "AIRFLOW_CONN_AWS_DEFAULT": "aws://AKIA:x@/?endpoint_url=http%3A%2F%2F127.0.0.1%3A9",
    "AIRFLOW_CONN_KAFKA_DEFAULT": "kafka://?bootstrap.servers=127.0.0.1%3A9",
    "PUBLISHER_BUCKET": "someone-elses-bucket",
    "PUBLISHER_ARTIFACTS_URL": "s3://production-artifacts/runs",
    "PUBLISHER_SCHEDULE": "not a schedule",
    "CATALOG_PUBLISHER_HOME": "/nonexistent/home",
}


@pytest.fixture
def clone(tmp_path) -> Path:
    """The project's files as a fresh clone has them (no data/, .stack/, .airflow/)."""
    root = tmp_path / "clone"
    for part in ("dags", "include", "plugins", "devstack", "scripts"):
        shutil.copytree(project_root() / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "user-home"
    (home / ".aws").mkdir(parents=True)
    # A profile that would send every S3 call elsewhere, as in many AWS users' ~/.aws/config.
    (home / ".aws" / "config").write_text("[default]\nregion = ap-nowhere-1\nendpoint_url = http://127.0.0.1:9\n")
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = {SECRET}\n"
    )
    return root


def demo(clone: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    shell = {"PATH": "/usr/bin:/bin", "HOME": str(clone.parent / "user-home"), "LANG": "C.UTF-8"}
    command = [sys.executable, str(clone / "scripts" / "demo.py"), "--count", "30", "--batch-size", "10"]
    return subprocess.run(command, cwd=clone, env={**shell, **env}, capture_output=True, text=True, timeout=timeout)


def stack_processes(clone: Path) -> list[psutil.Process]:
    """Processes of the copy's embedded stack still running (their working folder is its .stack/)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        if (proc.info.get("cwd") or "").startswith(str(clone / ".stack")):
            found.append(proc)
    return found


@pytest.mark.fault(
    "make demo in a shell with the user's own AWS_* (keys, session token, missing profile, endpoint, region, "
    "~/.aws files), KAFKA_*, ELASTICSEARCH_*, AIRFLOW_* and PUBLISHER_* settings",
    "the demo names the variables it ignores (never their values) and runs end to end on its own stack",
)
def test_the_demo_ignores_the_callers_aws_kafka_elasticsearch_and_airflow_settings(clone):
    done = demo(clone, HOSTILE)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    ignored = next(line for line in done.stdout.splitlines() if line.startswith("demo: ignoring "))
    assert all(name in ignored for name in HOSTILE), ignored
    assert SECRET not in output and "AKIAIOSFODNN7HOSTILE" not in output
    assert "publish_product_images run" in done.stdout and ": success" in done.stdout
    assert "30 catalog products searchable with their S3 image_url" in done.stdout
    mapping = json.loads((clone / "data" / "s3_url_mapping.json").read_text())
    assert mapping["failed_images"] == 0 and all(
        "127.0.0.1:9/" not in url for url in mapping["product_to_s3_url"].values()
    )
    assert not (Path("/nonexistent")).exists()
    assert stack_processes(clone) == []


@pytest.mark.fault(
    "a service of the embedded stack fails to start (Tansu exits at once)",
    "the demo prints one error line naming the service, the reason from its log and where the log is; "
    "the services already started are stopped",
)
def test_a_stack_service_that_cannot_start_is_named_in_one_line_with_its_log(clone, tmp_path):
    broken = tmp_path / "tansu"
    broken.write_text(
        "#!/bin/sh\necho 'starting'\necho 'tansu: cannot open storage s3://tansu/: access denied' >&2\nexit 3\n"
    )
    broken.chmod(0o755)
    done = demo(clone, {"CALF_TANSU_BIN": str(broken)}, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    log = clone / ".stack" / "logs" / "tansu.log"
    assert errors == [
        "error: Tansu (Kafka) exited with code 3 during start-up: "
        f"tansu: cannot open storage s3://tansu/: access denied (log: {log})"
    ], done.stderr
    assert "access denied" in log.read_text()
    assert stack_processes(clone) == []  # SeaweedFS, started first, was stopped


@pytest.mark.fault(
    "a stack service stays alive but never becomes ready (make demo)",
    "after the readiness timeout one line names the service, its last log line and its log; the others stop",
)
def test_a_stack_service_that_never_becomes_ready_is_named_in_one_line_with_its_log(clone, tmp_path):
    """Tansu stays alive but never listens (a broker stuck reaching its storage, say): after the readiness timeout,
    made short through EMBEDDED_STACK_READY_TIMEOUT_S, the demo says which service, why, and where its log is."""
    stuck = tmp_path / "tansu"
    stuck.write_text("#!/bin/sh\necho 'tansu: waiting for storage s3://tansu/ to answer'\nexec sleep 600\n")
    stuck.chmod(0o755)
    # Short, yet ample for SeaweedFS (started first, ready in a second or two), which must not be the one named.
    done = demo(clone, {"CALF_TANSU_BIN": str(stuck), "EMBEDDED_STACK_READY_TIMEOUT_S": "10"}, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    log = clone / ".stack" / "logs" / "tansu.log"
    assert errors == [
        f"error: Tansu (Kafka) was not ready after 10s: tansu: waiting for storage s3://tansu/ to answer (log: {log})"
    ], done.stderr
    assert (clone / ".stack" / "logs" / "seaweedfs.log").exists()  # started before it, and stopped:
    assert stack_processes(clone) == []  # SeaweedFS and the stuck Tansu alike
    assert not (clone / ".stack" / "logs" / "osmem.log").exists()  # started after it: never


def test_a_bad_readiness_timeout_is_named_before_any_service_starts(clone):
    done = demo(clone, {"EMBEDDED_STACK_READY_TIMEOUT_S": "soon"}, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: EMBEDDED_STACK_READY_TIMEOUT_S must be a number of seconds above 0 (got 'soon')"]
    assert not (clone / ".stack" / "logs").exists() and stack_processes(clone) == []
