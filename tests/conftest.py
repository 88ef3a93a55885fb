"""Shared fixtures: the real embedded stack (SeaweedFS, Tansu, osmem) and a throwaway Airflow home.

Airflow reads its home and configuration once, when first imported, so both are set here at
import time, before any test module imports airflow. Artifacts of DAG runs go to a temporary
project home (CATALOG_PUBLISHER_HOME), never to the checkout's data/.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from devstack import local_airflow
from devstack.embedded_stack import isolate_from_caller

isolate_from_caller()  # the caller's AWS_*, KAFKA_*, AIRFLOW_*, ... settings must not reach the tests' services
# A deployment allows inputs from the project home's data/ only (allowed_inputs.py); the tests' images and
# catalogs live in temporary folders. Tests of the limit itself set PUBLISHER_ALLOWED_INPUTS with monkeypatch.
os.environ["PUBLISHER_ALLOWED_INPUTS"] = f"data,{os.path.realpath(tempfile.gettempdir())}"
# Likewise outputs (allowed_outputs.py): the tests write to fresh buckets, topics and indexes of their own; tests of
# the limit, and the deployments that run the compose file or an Astro layout, set PUBLISHER_ALLOWED_OUTPUTS.
os.environ["PUBLISHER_ALLOWED_OUTPUTS"] = "s3://*,kafka://*,elasticsearch://*"
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="catalog-publisher-tests-"))
os.environ["CATALOG_PUBLISHER_HOME"] = str(_SESSION_DIR / "home")
local_airflow.configure(_SESSION_DIR / "airflow", {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})

from devstack.embedded_stack import EmbeddedStack  # noqa: E402
from tests.helpers import make_kafka_topic, s3_client  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    """The three services on free loopback ports, with their AIRFLOW_CONN_* and client variables exported."""
    embedded = EmbeddedStack(_SESSION_DIR / "stack")
    state = embedded.start()
    saved = {key: os.environ.get(key) for key in state.env()}
    os.environ.update(state.env())
    yield state
    embedded.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def airflow_db(stack):
    """The SQLite metadata database, migrated once per session."""
    local_airflow.migrate()


@pytest.fixture
def s3(stack):
    return s3_client(stack)


@pytest.fixture
def bucket(s3) -> str:
    """A fresh, empty bucket per test, so tests never see each other's objects."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def topic(stack) -> str:
    """A fresh Kafka topic per test."""
    return make_kafka_topic(stack.kafka_bootstrap, f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def project_home() -> Path:
    return Path(os.environ["CATALOG_PUBLISHER_HOME"])


# The modules that run whole Airflow deployments (a few minutes each) go first, so that under `make test`'s
# two workers (pytest-xdist, one module per worker at a time, in this order: --no-loadscope-reorder) neither
# worker is left idle at the end.
LONG_MODULES_FIRST = ("tests/scheduler/", "tests/ui/", "tests/distributed/", "tests/deployment/")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_MODULES_FIRST))  # stable: order within a module kept


def pytest_sessionfinish(session, exitstatus):
    """The session's folder (its stack's data, Airflow homes and logs: hundreds of MB) goes with a green session;
    a failed one keeps it for its logs, and says where."""
    if exitstatus == 0:
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)
    else:
        print(f"\nkept for its logs: {_SESSION_DIR}", file=sys.stderr)
