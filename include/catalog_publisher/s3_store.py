"""The S3 client for the upload hot path, object keys, and listing a prefix (s3_errors.py: plain-language errors).

Uploads go through obstore (Rust `object_store`), which keeps up with s5cmd on two cores where
a boto3 loop is CPU-bound. Credentials still come from boto3's chain or an Airflow connection
(a boto3 session either way), so nothing about authentication is new to operators.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.s3_errors import as_error, classify, describe

log = logging.getLogger(__name__)

# Throttling (429/503 SlowDown) and 5xx answers are retried with exponential backoff; what remains after
# these retries is classified by s3_errors (service trouble: Airflow retries the task later).
RETRY = {
    "max_retries": 6,
    "backoff": {"init_backoff": timedelta(milliseconds=200), "max_backoff": timedelta(seconds=10), "base": 2.0},
    "retry_timeout": timedelta(minutes=2),
}


# For interactive checks: answer within seconds rather than retrying for minutes.
QUICK_RETRY = {
    "max_retries": 2,
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1), "base": 2.0},
    "retry_timeout": timedelta(seconds=10),
}


@dataclass(frozen=True)
class S3Target:
    """Where objects go: the bucket, and the endpoint when it is not AWS itself."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None

    @property
    def where(self) -> str:
        return f"bucket '{self.bucket}'" + (f" at {self.endpoint}" if self.endpoint else "")


SSE_ALGORITHMS = ("AES256", "aws:kms")


@dataclass(frozen=True)
class Encryption:
    """Server-side encryption asked for on every upload: SSE-S3 ("AES256") or SSE-KMS ("aws:kms", with
    an optional key id; without one S3 uses the account's aws/s3 key). None: the bucket's default."""

    algorithm: str | None = None
    kms_key_id: str | None = None

    def store_config(self) -> dict[str, str]:
        if self.algorithm is None:
            if self.kms_key_id:
                raise PublisherError(
                    "a KMS key id needs server-side encryption aws:kms; "
                    "pass --sse aws:kms (or set server_side_encryption)"
                )
            return {}
        if self.algorithm not in SSE_ALGORITHMS:
            raise PublisherError(f"server-side encryption {self.algorithm!r} is not one of {', '.join(SSE_ALGORITHMS)}")
        if self.kms_key_id and self.algorithm != "aws:kms":
            raise PublisherError(f"a KMS key id goes with server-side encryption aws:kms, not {self.algorithm}")
        config = {"server_side_encryption": self.algorithm}
        if self.kms_key_id:
            config["sse_kms_key_id"] = self.kms_key_id
        return config


def make_store(
    target: S3Target,
    session=None,
    *,
    retry: dict | None = None,
    timeout: str = "60s",
    encryption: Encryption | None = None,
) -> S3Store:
    """An S3Store for target, signing with the credentials of a boto3 session (default chain if None).

    Every upload sends a SHA-256 checksum (`x-amz-checksum-sha256`) that the server verifies, and
    the server-side encryption headers when `encryption` asks for it. Objects get no ACL: they stay
    as private as the bucket.
    """
    import boto3
    from obstore.auth.boto3 import Boto3CredentialProvider

    session = session or boto3.Session()
    try:
        provider = Boto3CredentialProvider(session)
    except ValueError:
        raise PublisherError(
            "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "or fill in the aws_default connection"
        ) from None
    config: dict = {"checksum_algorithm": "sha256", "region": target.region or session.region_name or "us-east-1"}
    config.update((encryption or Encryption()).store_config())
    if target.endpoint:
        config["endpoint"] = target.endpoint
        config["virtual_hosted_style_request"] = False
    client_options = {"timeout": timeout, "connect_timeout": "10s"}
    if target.endpoint and target.endpoint.startswith("http://"):
        client_options["allow_http"] = True
    return S3Store(
        target.bucket,
        config=config,
        client_options=client_options,
        retry_config=retry or RETRY,
        credential_provider=provider,
    )


def is_unreachable(exc: BaseException) -> bool:
    """True when S3 never answered (connection refused, DNS, timeout) or cannot serve now: worth retrying later."""
    return classify(exc).retry_later


def describe_error(exc: BaseException, target: S3Target) -> str:
    """One line saying what went wrong with S3 and what to do about it (s3_errors.describe)."""
    return describe(exc, target.where)


def check_bucket(store: S3Store, target: S3Target) -> None:
    """Fail early, with one clear message, when the bucket is missing, unreachable or forbidden."""
    try:
        next(iter(obstore.list(store, prefix="_catalog_publisher_bucket_check_", chunk_size=1)), None)
    except (BaseError, OSError) as exc:  # obstore raises the builtin FileNotFoundError for some 404s
        raise as_error(exc, target.where) from None


def object_key(prefix: str, file_name: str, image_date: str | None = None) -> str:
    """`{prefix}/{file}` as in the runbook; just the file name when there is no prefix. An image from a date
    folder goes under its day, `{prefix}/{YYYY-MM-DD}/{file}`: no run of one day can replace another day's
    object, so a backfill never puts an older image back at a newer one's URL."""
    prefix = prefix.strip("/")
    name = f"{image_date}/{file_name}" if image_date else file_name
    return f"{prefix}/{name}" if prefix else name


def image_key(prefix: str, image: dict) -> str:
    """The object key of a manifest entry."""
    return object_key(prefix, image["file_name"], image.get("image_date"))


def scope_prefixes(prefix: str, days: list[str] | None) -> list[str]:
    """Where a run's objects are: under the prefix (a flat run), or under each of its days' folders, in key order."""
    return [prefix] if days is None else [object_key(prefix, "", day).rstrip("/") for day in sorted(days)]


def iter_objects(store: S3Store, target: S3Target, prefixes: list[str]) -> Iterator[tuple[str, int, str]]:
    """(key, size, ETag) of every object under each prefix, in key order when the prefixes are (S3 lists in
    UTF-8 binary order, Python compares strings the same way): one LIST request per 1000 objects. The next
    pages are fetched while the caller works through this one (a few pages ahead, never the whole listing)."""

    def pages() -> Iterator[list]:
        for prefix in prefixes:
            yield from obstore.list(store, prefix=prefix.strip("/") or None, chunk_size=1000)

    try:
        for page in _read_ahead(pages(), depth=_PAGES_AHEAD):
            for meta in page:
                yield meta["path"], meta["size"], (meta["e_tag"] or "").strip('"')
    except (BaseError, OSError) as exc:
        raise as_error(exc, target.where) from None


_PAGES_AHEAD = 4
_END = object()


def _read_ahead(items: Iterator, depth: int) -> Iterator:
    """`items`, produced by a thread up to `depth` ahead of the consumer; its error is raised here, in order.
    Leaving early (an error downstream, a closed generator) stops the thread at its next item."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ahead.put(item)
            ahead.put(_END)
        except BaseException as exc:  # noqa: BLE001 (any end, a Rust panic too, reaches the consumer: never a hang)
            ahead.put(exc)

    thread = threading.Thread(target=produce, name="s3-list-ahead", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting for room, then let it see `stop`
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.1)
        thread.join()
