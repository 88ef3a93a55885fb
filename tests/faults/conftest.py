"""Fault tests get a stack of their own: they kill and restart its services, which the session's
stack must never see. Also here: a self-signed certificate and a TLS terminator for transport-security
tests (the HTTP fault proxy is tests.helpers.fault_proxy)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from devstack.embedded_stack import HOST, EmbeddedStack


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    """(EmbeddedStack, StackState) that this module alone uses, so it may kill its services."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("fault-stack"))
    state = stack.start()
    yield stack, state
    stack.stop()


def self_signed_certificate(folder) -> tuple[str, str]:
    """(certificate, key) PEM files for 127.0.0.1, the certificate being its own CA: what a client trusts via
    ssl.ca.location / ca_certs."""
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
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


async def _pipe(reader, writer) -> None:
    """Copy bytes from reader to writer until either side closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def _tcp_server(handle, listen_port: int, ssl_context=None) -> Iterator[int]:
    """An asyncio TCP server on loopback in a thread of its own; yields its port."""
    import asyncio

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, HOST, listen_port, ssl=ssl_context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@contextlib.contextmanager
def tls_terminator(upstream_port: int, cert: str, key: str, listen_port: int = 0) -> Iterator[int]:
    """A TLS listener on loopback that forwards the decrypted bytes to upstream_port: a real TLS hop
    in front of a plain-TCP service (Tansu here). Yields the port it listens on."""
    import asyncio
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    with _tcp_server(handle, listen_port, context) as port:
        yield port


SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS, CREATE_TOPICS = 17, 36, 18, 19
TOPIC_AUTHORIZATION_FAILED = 29


def _refuse_create_topics(frame: bytes) -> bytes:
    """A CreateTopics response (v0-v4, the versions librdkafka sends) refusing the request's first topic
    with TOPIC_AUTHORIZATION_FAILED, as a broker with ACLs answers a user without CREATE rights."""
    import struct

    version, correlation_id = struct.unpack(">hi", frame[6:12])
    assert version <= 4, f"CreateTopics v{version}: only v0-v4 are answered here"
    client_id_length = struct.unpack(">h", frame[12:14])[0]
    body = frame[14 + max(client_id_length, 0) :]
    name_length = struct.unpack(">h", body[4:6])[0]  # topics: int32 count, then the first name
    name = body[6 : 6 + name_length]
    answer = struct.pack(">i", correlation_id) + (struct.pack(">i", 0) if version >= 2 else b"")
    answer += struct.pack(">i", 1) + struct.pack(">h", len(name)) + name + struct.pack(">h", TOPIC_AUTHORIZATION_FAILED)
    if version >= 1:
        message = b"Authorization failed."
        answer += struct.pack(">h", len(message)) + message
    return struct.pack(">i", len(answer)) + answer


def _sasl_response(api_key: int, version: int, correlation_id: int, error: int, message: str | None) -> bytes:
    """A SaslHandshake or SaslAuthenticate response, in the request's version (Kafka protocol)."""
    import struct

    if api_key == SASL_HANDSHAKE:  # v0/v1: error_code, mechanisms[]
        body = struct.pack(">hi", error, 1) + struct.pack(">h", 5) + b"PLAIN"
        return struct.pack(">i", correlation_id) + body
    if version >= 2:  # flexible: compact strings/bytes, tagged fields, response header v1
        text = (message or "").encode()
        body = struct.pack(">h", error) + (bytes([len(text) + 1]) + text if message is not None else b"\x00") + b"\x01"
        return struct.pack(">i", correlation_id) + b"\x00" + body + struct.pack(">q", 0) + b"\x00"
    text = (message or "").encode()
    body = (
        struct.pack(">h", error)
        + (struct.pack(">h", len(text)) + text if message is not None else struct.pack(">h", -1))
        + struct.pack(">i", 0)
    )
    if version >= 1:
        body += struct.pack(">q", 0)  # session_lifetime_ms
    return struct.pack(">i", correlation_id) + body


@contextlib.contextmanager
def sasl_plain_gateway(
    upstream_port: int, users: dict[str, str], listen_port: int = 0, may_create_topics: bool = True
) -> Iterator[int]:
    """A broker front that requires SASL/PLAIN, as a Kafka listener with SASL_PLAINTEXT does: it answers
    SaslHandshake and SaslAuthenticate itself (checking `users`), drops a connection that sends anything
    else before authenticating, and forwards everything after to the plain broker. Without
    may_create_topics it refuses CreateTopics as an ACL would (Tansu has no ACLs). Yields its port."""
    import asyncio
    import struct

    async def handle(client_reader, client_writer):
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, upstream_port)
        back = asyncio.ensure_future(_pipe(upstream_reader, client_writer))
        authenticated = False
        try:
            while True:
                frame = await client_reader.readexactly(4)
                frame += await client_reader.readexactly(struct.unpack(">i", frame)[0])
                api_key, version, correlation_id = struct.unpack(">hhi", frame[4:12])
                if api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
                    error, message = 0, None
                    if api_key == SASL_AUTHENTICATE:
                        client_id_length = struct.unpack(">h", frame[12:14])[0]
                        body = frame[14 + max(client_id_length, 0) :]
                        if version >= 2:  # tagged fields, then compact bytes
                            body = body[1:]
                            token = body[1 : body[0]]
                        else:
                            token = body[4 : 4 + struct.unpack(">i", body[:4])[0]]
                        _, user, password = token.split(b"\0")
                        authenticated = users.get(user.decode()) == password.decode()
                        error, message = (
                            (0, None) if authenticated else (58, "Authentication failed: Invalid username or password")
                        )
                    answer = _sasl_response(api_key, version, correlation_id, error, message)
                    client_writer.write(struct.pack(">i", len(answer)) + answer)
                    await client_writer.drain()
                    if error:
                        break
                elif authenticated and api_key == CREATE_TOPICS and not may_create_topics:
                    client_writer.write(_refuse_create_topics(frame))
                    await client_writer.drain()
                elif authenticated or api_key == API_VERSIONS:
                    upstream_writer.write(frame)
                    await upstream_writer.drain()
                else:
                    break  # not authenticated: a SASL listener closes the connection
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            client_writer.close()
            upstream_writer.close()
            back.cancel()

    with _tcp_server(handle, listen_port) as port:
        yield port
