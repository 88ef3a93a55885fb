"""Fault tests get a stack of their own: they kill and restart its services, which the session's
stack must never see. Also here: a self-signed certificate and a TLS terminator for transport-security
tests (the HTTP fault proxy is tests.helpers.fault_proxy)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from catalog_publisher.embedded_stack import HOST, EmbeddedStack


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    """(EmbeddedStack, StackState) that this module alone uses, so it may kill its services."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("fault-stack"))
    state = stack.start()
    yield stack, state
    stack.stop()


def self_signed_certificate(folder) -> tuple[str, str]:
    """(certificate, key) PEM files for 127.0.0.1, the certificate being its own CA: what a client trusts via ssl.ca.location / ca_certs."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "catalog-publisher test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(cert_file), str(key_file)


@contextlib.contextmanager
def tls_terminator(upstream_port: int, cert: str, key: str, listen_port: int = 0) -> Iterator[int]:
    """A TLS listener on loopback that forwards the decrypted bytes to upstream_port: a real TLS hop
    in front of a plain-TCP service (Tansu here). Yields the port it listens on."""
    import asyncio
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = loop.run_until_complete(asyncio.start_server(handle, HOST, listen_port, ssl=context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
