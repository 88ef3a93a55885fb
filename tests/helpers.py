"""Small test helpers: clients for the embedded services and real image files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.embedded_stack import ACCESS_KEY, HOST, REGION, SECRET_KEY, StackState
from devstack.es_compat_proxy import Fault, make_handler

# An S3 retry policy that gives up within seconds, for tests that expect a failure.
FAST_FAIL = {
    "max_retries": 1,
    "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(milliseconds=100), "base": 2.0},
    "retry_timeout": timedelta(seconds=3),
}

IMAGE_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "AVIF": "image/avif",
}


def s3_client(state: StackState):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=state.s3_endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


def make_kafka_topic(bootstrap: str, name: str, partitions: int = 3, cleanup_policy: str = "compact") -> str:
    """A topic as a catalog topic is made (compacted: the publish trusts its saved state only on such a topic)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config={"cleanup.policy": cleanup_policy})
    admin.create_topics([topic])[name].result(timeout=15)
    return name


def read_messages(bootstrap: str, topic: str, timeout: float = 30.0) -> list:
    """Every message on the topic (confluent-kafka Message objects), from the start to the end of each partition.

    The end is the partition-EOF event (the high watermark of fetch responses), not ListOffsets:
    Tansu answers ListOffsets with the last batch's base offset + 1, short of the real end.
    """
    import time

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tests-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending = set(partitions)
        messages = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                continue
            messages.append(msg)
        assert not pending, f"partitions {pending} of {topic} not read to their end within {timeout}s"
        return messages
    finally:
        consumer.close()


def partition_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition holding messages, and its end: one past its last message's offset (read to partition-EOF,
    see read_messages)."""
    ends: dict[int, int] = {}
    for message in read_messages(bootstrap, topic):
        ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)
    return ends


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed offset of each of the topic's `partitions` (-1001 where it committed none)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def indexer_caught_up(bootstrap: str, topic: str = "products", group: str = "catalog-indexer") -> bool:
    """Whether the indexer's group has committed every partition of the topic to its end."""
    ends = partition_ends(bootstrap, topic)
    return committed_offsets(bootstrap, group, topic, ends) == ends


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[tuple[str, Any]]:
    """Every (key, decoded JSON value) on the topic, to the end of each partition."""
    return [
        (m.key().decode(), json.loads(m.value()) if m.value() is not None else None)
        for m in read_messages(bootstrap, topic, timeout)
    ]


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_bytes(fmt: str = "JPEG", side: int = 24, seed: int = 0) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (side, side), ((seed * 37) % 256, (seed * 91) % 256, 120))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def write_image(path: Path, fmt: str = "JPEG", seed: int = 0, side: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, side, seed))
    return path


def write_catalog(path: Path, products: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(products, indent=2), encoding="utf-8")
    return path


def manifest_of_run(run, date_folders: str = "") -> dict[str, Any]:
    """What plan_batches hands update_catalog, for a run whose scan found every file readable: the run's manifest
    (its header; the images are the mapping's) saved, and its date folders."""
    run.manifest.parent.mkdir(parents=True, exist_ok=True)
    header = {"images_dir": str(run.dir), "total_images": 0, "skipped_files": 0, "skipped": [], "images": []}
    run.manifest.write_text(json.dumps(header))
    return {"manifest": run.save(run.manifest), "date_folders": date_folders}


def run_as_nobody(fn, *args):
    """Run fn(*args) in a forked child without root's power to read any file; return its result.

    Tests run as root here, and root reads a chmod 000 file anyway; dropping to uid 65534 in a
    child is the real way to make a file unreadable to the code under test.
    """
    import pickle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            payload = pickle.dumps(("ok", fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            payload = pickle.dumps(("error", repr(exc)))
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status == "error":
        raise AssertionError(f"child failed: {value}")
    return value


@contextlib.contextmanager
def fault_proxy(upstream: str, fault: Fault, tls: tuple[str, str] | None = None) -> Iterator[str]:
    """A loopback proxy to `upstream` that lets `fault` answer some requests itself; yields its URL.
    With tls=(certificate, key) it speaks HTTPS."""
    server = ThreadingHTTPServer((HOST, 0), make_handler(upstream, fault))
    server.daemon_threads = True
    if tls:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# Shared by the halves of split test modules (service-free in tests/unit, on the stack in tests/integration).

PUBLISHER_DAG = "publish_product_images"

# The products the Kafka publish tests send: keyed PROD-0..PROD-49, names with a non-ASCII letter.
KAFKA_PRODUCTS = [
    {
        "product_id": f"PROD-{i}",
        "name": f"Product {i} ü",
        "price": i * 1.5,
        "image_url": f"https://b/{i}.jpg",
    }
    for i in range(50)
]


def kafka_producer(bootstrap: str):
    """A producer with the publisher's settings (idempotent, acks=all)."""
    from confluent_kafka import Producer

    from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS

    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})


@contextlib.contextmanager
def elasticsearch_answering_502() -> Iterator[str]:
    """A real HTTP server answering 502 to everything (the media-type proxy in front of a dead engine); its URL."""
    import subprocess
    import sys
    import time

    from devstack.embedded_stack import free_port

    port = free_port()
    dead_engine = f"http://{HOST}:{unused_port()}"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "devstack.es_compat_proxy", "--listen", f"{HOST}:{port}", "--upstream", dead_engine],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://{HOST}:{port}"
    finally:
        proxy.terminate()
        proxy.wait(10)


def old_run(root: Path, name: str, days_ago: float) -> None:
    """A run folder with a manifest and a batch file, all last written `days_ago` days ago."""
    import time

    folder = root / name
    (folder / "batches").mkdir(parents=True)
    (folder / "s3_upload_manifest.json").write_text("{}")
    (folder / "batches" / "batch-00000.json").write_text("{}")
    when = time.time() - days_ago * 86400
    written = [folder / "batches" / "batch-00000.json", folder / "s3_upload_manifest.json", folder / "batches", folder]
    for path in written:
        os.utime(path, (when, when))


def retention_home(tmp_path: Path, monkeypatch) -> Path:
    """A project home at tmp_path with one image, local artifacts and no retention settings (the defaults)."""
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    for name in ("PUBLISHER_RETENTION_DAYS", "PUBLISHER_RETENTION_RUNS", "PUBLISHER_RETENTION_GRACE_HOURS"):
        monkeypatch.delenv(name, raising=False)
    write_image(tmp_path / "data" / "images" / "PROD-1.jpg")
    return tmp_path
