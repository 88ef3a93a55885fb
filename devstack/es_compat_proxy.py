"""Embedded wiring only: let the `elasticsearch` client talk to osmem, the embedded Elasticsearch-API engine.

The client always sends `application/vnd.elasticsearch+json; compatible-with=9` (and +x-ndjson for
bulk); osmem answers those with 406 and wants plain `application/json` / `application/x-ndjson`.
This loopback proxy rewrites the two headers and forwards everything else unchanged, so the
pipeline's own clients (built by the Airflow provider's hook or from ELASTICSEARCH_URL) stay exactly
as they are against real Elasticsearch. The pipeline never imports this module.

The tests reuse the same forwarding handler as a fault proxy (`make_handler(upstream, fault)`): in
front of SeaweedFS or osmem it lets a test answer chosen requests itself (503 SlowDown, a bulk of
429s, a 401) or delay them, while everything else reaches the real server unchanged.

  python -m devstack.es_compat_proxy --listen 127.0.0.1:9201 --upstream http://127.0.0.1:9200
"""

from __future__ import annotations

import argparse
import http.client
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_COMPAT = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+)(\s*;\s*compatible-with=\d+)?")
# Host is passed through: S3 clients sign it (SigV4), so the tests' fault proxy in front of S3 must keep it.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
# A fault tests inject: (method, path, request headers with lower-case names, body) -> None to forward,
# or (status, headers, body) to answer instead.
Fault = Callable[[str, str, dict[str, str], bytes | None], "tuple[int, dict[str, str], bytes] | None"]


def plain_media_type(value: str) -> str:
    """`application/vnd.elasticsearch+json; compatible-with=9` -> `application/json` (other parts kept)."""
    return _COMPAT.sub(r"application/\1", value)


class _ForwardingHandler(BaseHTTPRequestHandler):
    """Forwards each request to `upstream` over one kept-alive connection per thread; see make_handler."""

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    fault: Fault | None = None
    local: threading.local
    protocol_version = "HTTP/1.1"  # keep-alive towards the client

    def _forward(self) -> None:
        body, headers = self._read_request()
        injected = (
            self.fault(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if self.fault
            else None
        )
        if injected:
            status, extra_headers, payload = injected
            self._answer(status, list(extra_headers.items()), payload)
            return
        answered = self._call_upstream(body, headers)
        if answered is None:
            self.send_error(502, "the upstream server is not answering")
            return
        self._answer(*answered)

    def _read_request(self) -> tuple[bytes | None, dict[str, str]]:
        """The body, and the headers to forward with the media types made plain."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        for name in list(headers):
            if name.lower() in ("accept", "content-type"):
                headers[name] = plain_media_type(headers[name])
        return body, headers

    def _call_upstream(self, body: bytes | None, headers: dict[str, str]) -> tuple | None:
        """(status, headers, payload) from upstream; None when it does not answer twice."""
        for _ in range(2):  # a kept-alive upstream connection may have been closed
            try:
                conn = self._connection()
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.HTTPException, OSError):
                self.local.conn = None
        return None

    def _connection(self) -> http.client.HTTPConnection:
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPConnection(*self.upstream, timeout=300)
        return self.local.conn

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would drown the stack's log


def make_handler(upstream: str, fault: Fault | None = None) -> type[BaseHTTPRequestHandler]:
    """A forwarding handler; with `fault`, some requests are answered by the fault instead (tests only)."""
    parts = urlsplit(upstream)
    attributes = {"upstream": (parts.hostname, parts.port), "fault": staticmethod(fault) if fault else None}
    return type("Handler", (_ForwardingHandler,), {**attributes, "local": threading.local()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="host:port to listen on (loopback)")
    parser.add_argument("--upstream", required=True, help="osmem's URL")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), make_handler(args.upstream))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
