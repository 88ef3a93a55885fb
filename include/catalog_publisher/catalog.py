"""Step 5: rewrite the catalog with the S3 URLs (runbook: update_catalog_with_s3_urls.py).

Reads a JSON array of products, an object holding a `products` array, or JSON Lines; writes the
same shape with each mapped product's `image_url` set and every other field untouched. Arrays
and JSON Lines stream, so catalog size is bounded by disk, not memory; the object form is loaded
whole (use an array or JSON Lines for very large catalogs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson
import msgspec

from include.catalog_publisher.defaults import IMAGE_DATE_FIELD, IMAGE_SHA256_FIELD, IMAGE_URL_FIELD, PRODUCT_ID_FIELDS
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import atomic_output
from include.catalog_publisher.url_mapping import UrlTable

log = logging.getLogger(__name__)

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_EXAMPLES = 10  # ids listed in the log for each kind of mismatch

# A product (or id) as JSON text: how the rewrite writes it a line and the Kafka message carries it. One encoder
# for every product (json.dumps with an option builds a new encoder per call).
encode_json = json.JSONEncoder(ensure_ascii=False).encode


def product_id(product: Any) -> str | None:
    """The product's id (`product_id`, else `id`) as a string, or None when it has none."""
    if not isinstance(product, dict):
        return None
    for name in PRODUCT_ID_FIELDS:
        value = product.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) != "":
            return str(value)
    return None


def detect_format(path: str | os.PathLike) -> str:
    """'array', 'object' or 'jsonl', from the extension and the first bytes of the file."""
    p = Path(path)
    if p.suffix.lower() in JSON_LINES_SUFFIXES:
        return "jsonl"
    try:
        with open(p, "rb") as f:
            first_line = f.readline()
            while first_line and not first_line.strip():
                first_line = f.readline()
            more = bool(f.read(1).strip()) or bool(f.readline().strip())
    except FileNotFoundError:
        raise PublisherError(
            f"catalog {p} does not exist; pass --catalog-file (or the catalog_file param) "
            "pointing at the product catalog"
        ) from None
    except IsADirectoryError:
        raise PublisherError(f"catalog {p} is a directory; pass the catalog's JSON file") from None
    start = first_line.lstrip()[:1]
    if start == b"[":
        return "array"
    if start == b"{":
        try:
            head = json.loads(first_line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "object"  # a multi-line JSON document
        if isinstance(head, dict) and isinstance(head.get("products"), list):
            return "object"
        # Several lines, or one product (JSON Lines of one line): an object without products, with an id.
        return "jsonl" if more or product_id(head) is not None else "object"
    raise PublisherError(
        f"catalog {p} is not JSON: expected a JSON array of products, an object with a 'products' array, "
        "or JSON Lines; check you passed the catalog file"
    )


def _bad_json(path: Path, exc: Exception) -> PublisherError:
    """One line whatever the parser said (ijson's messages span lines and quote raw bytes)."""
    text = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    if "invalid bytes in UTF8" in text:
        return PublisherError(f"catalog {path} is not UTF-8 text; re-encode it as UTF-8")
    return PublisherError(
        f"catalog {path} is not valid JSON ({text.strip().splitlines()[0]}); fix the file or regenerate it"
    )


def read_products(path: str | os.PathLike) -> Iterator[Any]:
    """Stream the products of a catalog in any of the three formats."""
    p = Path(path)
    fmt = detect_format(p)
    try:
        if fmt == "jsonl":
            with open(p, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise PublisherError(
                                f"catalog {p} line {number} is not valid JSON ({exc}); fix that line"
                            ) from None
        elif fmt == "array":
            with open(p, "rb") as f:
                yield from ijson.items(f, "item", use_float=True)
        else:
            yield from _load_object(p)["products"]
    except (ijson.JSONError, json.JSONDecodeError) as exc:
        raise _bad_json(p, exc) from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(p, exc) from None


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> PublisherError:
    return PublisherError(f"catalog {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-encode it as UTF-8")


def _load_object(p: Path) -> dict[str, Any]:
    try:
        with open(p, encoding="utf-8") as f:
            document = json.load(f)
    except json.JSONDecodeError as exc:
        raise _bad_json(p, exc) from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(p, exc) from None
    if not isinstance(document.get("products"), list):
        raise PublisherError(
            f"catalog {p} is a JSON object without a 'products' array; "
            "give the products as an array, an object's 'products', or JSON Lines"
        )
    return document


@dataclass
class CatalogSummary:
    format: str
    products: int = 0
    updated: int = 0
    products_without_image: int = 0
    products_without_id: int = 0
    duplicate_product_ids: int = 0
    images_without_product: int = 0
    held: int = 0  # products left at their live version: their image could not be read or uploaded this run
    held_reason: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Held:
    """What a run leaves at its live version rather than publish without an image it could not vouch for: those of
    `products` (a file of theirs could not be read or uploaded this run) that got no image this run, and, when part
    of the images folder could not be read at all (`unmapped`: why), every product without an image this run."""

    products: frozenset[str] = frozenset()
    unmapped: str = ""

    def reason(self) -> str:
        if self.unmapped:
            return f"the scan could not read {self.unmapped}: products without an image this run are left as they are"
        return "their image could not be read or uploaded this run" if self.products else ""


class _Rewriter:
    """Sets image_url on each product from the mapping and keeps the counts.

    Products with an image are tracked by claiming their entry in the URL table (no second copy of
    a million ids); only ids without an image are remembered, to spot their duplicates. That is
    what keeps the rewrite's memory bounded at a million products (bench/scale.py measures it).
    """

    def __init__(
        self,
        urls: UrlTable,
        summary: CatalogSummary,
        dates: Mapping[str, str] | None = None,
        held: Held | None = None,
    ) -> None:
        self.urls, self.summary, self.dates = urls, summary, dates or {}
        self.held = held or Held()
        self.unmapped: set[str] = set()
        self.ids_out: IO[str] | None = None  # every product id seen, one per line, when asked for

    def _example(self, kind: str, value: str) -> None:
        examples = self.summary.examples.setdefault(kind, [])
        if len(examples) < _EXAMPLES:
            examples.append(value)

    def __call__(self, product: Any) -> Any:
        """The product with its image_url set; None when it is held (left out: its live document stays)."""
        s = self.summary
        s.products += 1
        pid = product_id(product)
        if pid is None:
            s.products_without_id += 1
            self._example("products_without_id", f"#{s.products}")
            return product
        if self.ids_out is not None:  # JSON per line: an id may hold "\r" or any other character
            self.ids_out.write(encode_json(pid) + "\n")
        url, seen = self.urls.claim(pid)
        if url is None:
            seen = pid in self.unmapped
            self.unmapped.add(pid)
        if seen:
            s.duplicate_product_ids += 1
            self._example("duplicate_product_ids", pid)
        if url is None and (pid in self.held.products or self.held.unmapped):
            s.held += 1  # its live document stays: this run cannot vouch for its image
            self._example("held", pid)
            return None
        if url is None:
            s.products_without_image += 1
            self._example("products_without_image", pid)
            return product
        s.updated += 1
        product[IMAGE_URL_FIELD] = url
        if checksum := self.urls.checksum(pid):  # the DAG's catalog: a new picture at the same URL is a change
            product[IMAGE_SHA256_FIELD] = checksum
        if pid in self.dates:
            product[IMAGE_DATE_FIELD] = self.dates[pid]
        return product

    def kept(self, products: Iterator[Any]) -> Iterator[Any]:
        """The rewritten products, without the held ones."""
        for product in products:
            if (rewritten := self(product)) is not None:
                yield rewritten

    def finish(self) -> None:
        count, examples = 0, []
        for pid in self.urls.unclaimed():
            count += 1
            if len(examples) < _EXAMPLES:
                examples.append(pid)
        self.summary.images_without_product = count
        if examples:
            self.summary.examples["images_without_product"] = examples


def rewrite_catalog(
    catalog_file: str | os.PathLike,
    urls: Mapping[str, str],
    output_file: str | os.PathLike,
    *,
    image_dates: Mapping[str, str] | None = None,
    ids_file: str | os.PathLike | None = None,
    held: Held | None = None,
) -> CatalogSummary:
    """Write catalog_file to output_file with each product's image_url taken from urls (atomically).

    `image_dates` (date-partitioned runs) sets each product's image_date, the version the index keeps the newest of.
    `ids_file` gets the id of every product of the catalog, kept or not, one JSON string a line (what the catalog
    holds, for tombstones: read_catalog_ids). `held` products are left out (their live document stays).
    """
    source, output = Path(catalog_file), Path(output_file)
    if source.resolve() == output.resolve():
        raise PublisherError(f"output file {output} is the catalog itself; write the updated catalog to another file")
    fmt = detect_format(source)
    summary = CatalogSummary(format=fmt)
    table = urls if isinstance(urls, UrlTable) else UrlTable(urls.items())
    rewrite = _Rewriter(table, summary, image_dates, held)
    with atomic_output(output) as out, atomic_output(ids_file) if ids_file else contextlib.nullcontext() as ids:
        rewrite.ids_out = ids
        _write_rewritten(out, fmt, source, rewrite)
    rewrite.finish()
    summary.held_reason = rewrite.held.reason() if summary.held else ""
    _log_summary(output, summary)
    return summary


def _write_rewritten(out: IO[str], fmt: str, source: Path, rewrite: _Rewriter) -> None:
    """Write the rewritten catalog to `out` in the shape it was read: an object, JSON Lines or an array."""
    if fmt == "object":
        document = _load_object(source)
        document["products"] = list(rewrite.kept(document["products"]))
        json.dump(document, out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "jsonl":
        for product in rewrite.kept(read_products(source)):
            out.write(encode_json(product) + "\n")
    else:
        out.write("[")
        for i, product in enumerate(rewrite.kept(read_products(source))):
            out.write(("\n  " if i == 0 else ",\n  ") + encode_json(product))
        out.write("\n]\n")


def _log_summary(output: Path, summary: CatalogSummary) -> None:
    """Log each kind of mismatch with examples, then the counts of the rewrite."""
    for kind, ids in summary.examples.items():
        log.warning("%s: %d (e.g. %s)", kind.replace("_", " "), getattr(summary, kind), ", ".join(ids))
    log.info(
        "catalog %s: %d products, %d updated with S3 URLs, %d without image, %d images without product",
        output,
        summary.products,
        summary.updated,
        summary.products_without_image,
        summary.images_without_product,
    )


def refuse_products_without_id(summary: CatalogSummary, catalog_file: str | os.PathLike, not_done: str) -> None:
    """Raise when the rewrite met products without an id, before anything is published: Kafka keys each
    product by its id, and a publish would stop at the first product without one, after those before it
    went out. `not_done` says what was left undone, e.g. "nothing was published"."""
    if not summary.products_without_id:
        return
    examples = ", ".join(summary.examples.get("products_without_id", []))
    problem = f"catalog {catalog_file} has {summary.products_without_id} products without 'product_id' or 'id'"
    fix = f"they cannot be keyed in Kafka. Give every product an id and run again ({not_done})"
    raise PublisherError(f"{problem} (at {examples}); {fix}")


def read_catalog_ids(ids_file: str | os.PathLike) -> set[str]:
    """The ids rewrite_catalog's `ids_file` lists."""
    decode = msgspec.json.Decoder(str).decode
    with open(ids_file, "rb") as ids:
        return {decode(line) for line in ids if line.strip()}
