"""Fault tests get a stack of their own: they kill and restart its services, which the session's
stack must never see. A fault proxy (the embedded stack's forwarding proxy with a fault hook) puts
real HTTP faults between a client and a real server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from catalog_publisher.embedded_stack import HOST, EmbeddedStack
from catalog_publisher.es_compat_proxy import Fault, make_handler


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    """(EmbeddedStack, StackState) that this module alone uses, so it may kill its services."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("fault-stack"))
    state = stack.start()
    yield stack, state
    stack.stop()


@contextlib.contextmanager
def fault_proxy(upstream: str, fault: Fault) -> Iterator[str]:
    """A loopback proxy to `upstream` that lets `fault` answer some requests itself; yields its URL."""
    server = ThreadingHTTPServer((HOST, 0), make_handler(upstream, fault))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
