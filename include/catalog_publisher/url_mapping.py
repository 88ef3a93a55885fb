"""Step 4: merge upload results into the runbook's product -> S3 URL mapping.

URL rules (docs/design.md): a configured public base URL (a CDN) wins; against a custom endpoint the
URL is the object's path-style address there; otherwise the runbook's
`https://{bucket}.s3.amazonaws.com/{key}`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import ijson
import msgspec

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import read_json
from include.catalog_publisher.s3_store import S3Target


def object_url(target: S3Target, key: str, public_base_url: str | None = None) -> str:
    path = quote(key, safe="/")
    if public_base_url:
        return f"{public_base_url.rstrip('/')}/{path}"
    if target.endpoint:
        return f"{target.endpoint.rstrip('/')}/{target.bucket}/{path}"
    return f"https://{target.bucket}.s3.amazonaws.com/{path}"


def build_url_mapping(
    results: Iterable[dict[str, Any]], target: S3Target, prefix: str, public_base_url: str | None = None
) -> dict[str, Any]:
    """The mapping document: the runbook's keys, plus skipped images, bytes and each failure with its reason.

    `uploaded_images` counts what this run sent; images skipped as unchanged in the bucket are
    counted apart and, like the uploaded ones, carry their URL in `product_to_s3_url`.
    """
    urls: dict[str, str] = {}
    dates: dict[str, str] = {}  # date-partitioned runs: each product's image day (its version)
    checksums: dict[str, str] = {}  # each product's image SHA-256: a new picture at the same URL changes the product
    failures: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    uploaded_bytes = 0
    for r in results:
        counts[r["status"]] += 1
        if r["status"] not in ("uploaded", "skipped", "planned"):  # planned: a dry run's, with the URL it would get
            failures.append({"product_id": r["product_id"], "file_path": r["file_path"], "reason": r["error"]})
            continue
        urls[r["product_id"]] = object_url(target, r["key"], public_base_url)
        if r.get("image_date"):
            dates[r["product_id"]] = r["image_date"]
        if r.get("sha256"):
            checksums[r["product_id"]] = r["sha256"]
        uploaded_bytes += r["bytes"] if r["status"] == "uploaded" else 0
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "bucket_name": target.bucket,
        "prefix": prefix,
        "total_images": sum(counts.values()),
        "uploaded_images": counts["uploaded"],
        "failed_images": len(failures),
        "skipped_images": counts["skipped"],
        **({"planned_images": counts["planned"]} if counts["planned"] else {}),
        "uploaded_bytes": uploaded_bytes,
        "product_to_s3_url": urls,
        **({"product_image_dates": dates} if dates else {}),
        **({"product_image_sha256": checksums} if checksums else {}),
        "failures": failures,
    }


def rewrite_digest(mapping: dict[str, Any]) -> str:
    """One digest of what a catalog rewrite takes from a mapping: its URLs, image days and checksums."""
    used = [mapping["product_to_s3_url"], mapping.get("product_image_dates"), mapping.get("product_image_sha256")]
    return hashlib.sha256(msgspec.json.encode(used)).hexdigest()


def iter_batch_results(results_files: Iterable[str | os.PathLike]) -> Iterable[dict[str, Any]]:
    """Each result of the upload results files, streamed one at a time: a run's unchanged.json lists every image
    the bucket holds unchanged, and held whole it would cost as much memory as the mapping built from it."""
    for path in results_files:
        try:
            with open(path, "rb") as f:
                yield from ijson.items(f, "results.item", use_float=True)
        except FileNotFoundError:
            raise PublisherError(
                f"upload results file {path} does not exist; create it with the previous step first"
            ) from None
        except ijson.JSONError as exc:
            raise PublisherError(
                f"upload results file {path} is not valid JSON ({exc}); regenerate it with the previous step"
            ) from None


def load_image_dates(path: str | os.PathLike) -> dict[str, str]:
    """product id -> image day of a date-partitioned run's mapping (`product_image_dates`); empty otherwise."""
    with open(path, "rb") as f:
        return {pid: day for pid, day in ijson.kvitems(f, "product_image_dates") if isinstance(day, str)}


class UrlTable(Mapping[str, str]):
    """product id -> URL, held compactly: a million URLs share one base (`https://bucket.../products/`),
    so each entry keeps only what follows it. Read-only like a dict, except that an entry can be
    claimed (marked as used by a product), which is how the catalog rewrite counts images without
    product and duplicate products without a second table."""

    _WHOLE = "\0"  # leads a URL that does not start with the base, kept whole
    _CLAIMED = "\1"  # ends a claimed entry
    _CHECKSUM = "\2"  # leads the image's SHA-256, when the table was loaded with checksums

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._tails: dict[str, str] = {}
        self.base = ""
        for pid, url in items:
            if not self._tails and not self.base:
                self.base = url[: url.rfind("/") + 1]
            self._tails[pid] = url[len(self.base) :] if url.startswith(self.base) else self._WHOLE + url

    def _url(self, tail: str) -> str:
        tail = tail.removesuffix(self._CLAIMED).partition(self._CHECKSUM)[0]
        return tail[1:] if tail.startswith(self._WHOLE) else self.base + tail

    def add_checksum(self, pid: str, sha256: str) -> None:
        """Keep the image checksum of a product already in the table (before any claim)."""
        if pid in self._tails:
            self._tails[pid] = self._tails[pid].partition(self._CHECKSUM)[0] + self._CHECKSUM + sha256

    def checksum(self, pid: str) -> str | None:
        """The product's image SHA-256, if the table was loaded with checksums."""
        tail = self._tails.get(pid, "").removesuffix(self._CLAIMED)
        return tail.partition(self._CHECKSUM)[2] or None

    def __getitem__(self, pid: str) -> str:
        return self._url(self._tails[pid])

    def __contains__(self, pid: object) -> bool:
        return pid in self._tails

    def __iter__(self) -> Iterator[str]:
        return iter(self._tails)

    def __len__(self) -> int:
        return len(self._tails)

    def claim(self, pid: str) -> tuple[str | None, bool]:
        """(URL or None, whether an earlier claim took it already)."""
        tail = self._tails.get(pid)
        if tail is None:
            return None, False
        if tail.endswith(self._CLAIMED):
            return self._url(tail), True
        self._tails[pid] = tail + self._CLAIMED
        return self._url(tail), False

    def unclaimed(self) -> Iterator[str]:
        return (pid for pid, tail in self._tails.items() if not tail.endswith(self._CLAIMED))


def load_url_mapping(path: str | os.PathLike, *, checksums: bool = False) -> UrlTable:
    """The product -> URL table of a mapping file, validated, streamed (never the whole file in memory); with
    `checksums`, also each product's image SHA-256 (`product_image_sha256`, a second pass), for the DAG's catalog."""

    def pairs() -> Iterator[tuple[str, str]]:
        for pid, url in ijson.kvitems(f, "product_to_s3_url"):
            if not isinstance(url, str):
                raise PublisherError(
                    f"S3 URL mapping {path}: product {pid} maps to {url!r}, not a URL; "
                    "regenerate it with upload_to_s3.py"
                )
            yield pid, url

    try:
        with open(path, "rb") as f:
            table = UrlTable(pairs())
        if checksums:
            with open(path, "rb") as f:
                for pid, sha256 in ijson.kvitems(f, "product_image_sha256"):
                    table.add_checksum(pid, str(sha256))
    except FileNotFoundError:
        raise PublisherError(f"S3 URL mapping {path} does not exist; create it with the previous step first") from None
    except ijson.JSONError as exc:
        raise PublisherError(
            f"S3 URL mapping {path} is not valid JSON ({exc}); regenerate it with upload_to_s3.py"
        ) from None
    if not table:  # no entries: an empty mapping, or no 'product_to_s3_url' object at all
        mapping = read_json(path, "S3 URL mapping")
        if not isinstance(mapping, dict) or not isinstance(mapping.get("product_to_s3_url"), dict):
            raise PublisherError(
                f"S3 URL mapping {path} has no 'product_to_s3_url' object of product id -> URL; "
                "regenerate it with upload_to_s3.py"
            )
    return table
