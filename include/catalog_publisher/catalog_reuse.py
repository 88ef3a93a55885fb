"""The last rewritten catalog, reused by a run whose rewrite would have the same inputs.

Why: a daily run with nothing changed would otherwise parse and write the whole catalog again, work that grows
with the catalog instead of the change (bench/catalog_caches.py measures what it saves at 1,000,000 products).

The record (the latest copy of catalog-rewrite.json: data/, or .../<dag>/latest/ on object storage) says which
inputs the last rewrite had (the catalog file's bytes, the URLs, image days and checksums it set, and whether it
kept only the mapped products), where that run kept its catalog and id list with their SHA-256, and its counts. It
is a cache, never the truth: a run copies those files only when its own inputs are the same and the copies hash to
what the record says; no record, a corrupt or outdated one, a file pruned or replaced since, and the catalog is
rewritten (a slower run, never a wrong one). The record is written last, after both files were kept.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import files_sha256, publish_copy, read_json, write_json

log = logging.getLogger(__name__)

FORMAT = "catalog-publisher/catalog-rewrite"
VERSION = 1  # part of the inputs: raise it when rewrite_catalog writes something else from the same inputs
RECORD = "data/catalog-rewrite.json"
_OUTPUTS = ("catalog", "catalog_ids")


def inputs_digest(catalog_file: str | os.PathLike, urls_digest: str, selection: str) -> str:
    """What the rewrite depends on: the catalog's bytes, the mapping's URLs, days and checksums, and which products
    it keeps (`selection`: the mode and the products held at their live version)."""
    return files_sha256(catalog_file, prefix=f"{FORMAT}/{VERSION}\0{urls_digest}\0{selection}\0".encode())


def reuse(run, inputs: str) -> dict[str, Any] | None:
    """The last rewrite's counts, its catalog and id list copied to this run's paths, if it had these inputs and
    both files are intact; None when the catalog must be rewritten."""
    record = _load(run.fetch_latest(RECORD))
    if record is None or record["inputs"] != inputs:
        return None
    for name, local in zip(_OUTPUTS, (run.catalog, run.catalog_ids), strict=True):
        kept = record[name]
        try:
            source = run.fetch(kept["location"], missing_ok=True)
            if source is not None:
                publish_copy(source, local)
        except (OSError, PublisherError) as exc:
            log.info("the last rewritten %s (%s) cannot be read (%s); rewriting", name, kept["location"], exc)
            return None
        if source is None or files_sha256(local) != kept["sha256"]:
            log.info("the last rewritten %s (%s) is gone or was replaced; rewriting", name, kept["location"])
            return None
    log.info("same catalog and URLs as the last rewrite: its catalog is reused (%s)", record["catalog"]["location"])
    return record["summary"]


def remember(run, inputs: str, summary: dict[str, Any], locations: dict[str, str]) -> None:
    """Record this run's rewrite for the next run (after its catalog and id list were kept at `locations`)."""
    outputs = {
        name: {"location": locations[name], "sha256": files_sha256(local)}
        for name, local in zip(_OUTPUTS, (run.catalog, run.catalog_ids), strict=True)
    }
    record = run.dir / Path(RECORD).name
    write_json(record, {"format": FORMAT, "version": VERSION, "inputs": inputs, **outputs, "summary": summary})
    run.save(record)
    run.publish_latest(record, RECORD)


def _load(path: Path | None) -> dict[str, Any] | None:
    """The record, or None (with the reason logged) when there is none this code can use."""
    if path is None:
        return None
    try:
        record = read_json(path, "catalog rewrite record")
        if record.get("format") != FORMAT or record.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} {FORMAT} file")
        for name in _OUTPUTS:
            if not (isinstance(record[name]["location"], str) and isinstance(record[name]["sha256"], str)):
                raise ValueError(f"{name} has no location and sha256")
        if not (isinstance(record["inputs"], str) and isinstance(record["summary"], dict)):
            raise ValueError("inputs or summary missing")
    except (PublisherError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the catalog rewrite record %s (%s); the catalog is rewritten", path, exc)
        return None
    return record
