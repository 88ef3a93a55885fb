"""tests/unit is the fast, service-free layer: no embedded stack (SeaweedFS, Tansu, osmem), no Airflow metadata DB.

A test here that asks for the stack (`stack`, or `airflow_db`, `s3`, `bucket`, `topic`, which need it), or starts
an EmbeddedStack itself, fails at once instead of silently slowing the layer: it belongs in tests/integration.
"""

from __future__ import annotations

import pytest

from devstack.embedded_stack import EmbeddedStack

NO_SERVICES = "tests/unit runs without services: this test needs the embedded stack, so it belongs in tests/integration"


@pytest.fixture(scope="session")
def stack():
    """Overrides tests/conftest.py's stack for this folder: asking for it fails the test, nothing is started."""
    pytest.fail(NO_SERVICES, pytrace=False)


@pytest.fixture(autouse=True)
def _no_embedded_stack(monkeypatch):
    """A unit test that starts an EmbeddedStack itself fails at once, before any service is started."""

    def refuse(self, *args, **kwargs):
        pytest.fail(f"{NO_SERVICES} (it calls EmbeddedStack.start)", pytrace=False)

    monkeypatch.setattr(EmbeddedStack, "start", refuse)
