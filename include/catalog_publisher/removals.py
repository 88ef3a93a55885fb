"""Deleting the objects of images removed from the images folder: opt-in, guarded, and one run late.

Which objects: those of the run's scope whose key no image of the run's manifest has. The scope is a flat
folder's keys directly under the prefix, or `{prefix}/{day}/` for each of the run's days that gave images (a day
whose folder is missing, empty or a link is out of scope: it looks exactly like a removed one). An object the
live document of a product still in the catalog points at is never deleted, nor (dated runs) one the uploaded
images record still gives a product (uploaded_images.py: a product in the catalog keeps its image when its file
leaves the folder).

An object goes only on the second run that finds it unreferenced: the first marks it pending (kept beside the
run artifacts, per bucket), the next deletes it if it is still unreferenced. By then the indexer has applied
the first run's publish, so the index never serves a deleted object's URL, and a concurrent run's fresh upload
(absent from an older scan) is never taken.

The guards users of `aws s3 sync --delete`, s5cmd and rclone ask for: nothing at all is deleted when the scan
could not read a file or folder of the source, when the folder is missing or empty (the manifest step fails or
skips first), with an empty prefix (every object of the bucket's root would be in scope), or when more than
`max_deletions` objects would go in one run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import write_json
from include.catalog_publisher.manifest import iter_manifest_images, read_manifest_header
from include.catalog_publisher.s3_store import S3Target, image_key, iter_objects, scope_prefixes

log = logging.getLogger(__name__)

DELETE_CHUNK = 1000  # keys per DeleteObjects request (S3's limit)
_EXAMPLES = 5


def in_scope(key: str, prefix: str, days: list[str] | None) -> bool:
    """Whether a key is one this run's images could have: {prefix}/{file}, or {prefix}/{day}/{file} for its days."""
    prefix = prefix.strip("/")
    if not key.startswith(prefix + "/"):
        return False
    rest = key[len(prefix) + 1 :]
    if days is None:
        return "/" not in rest
    day, _, name = rest.partition("/")
    return day in days and name != "" and "/" not in name


def scope(manifest_file: str | os.PathLike, prefix: str) -> list[str] | None:
    """The run's days that gave images (None: a flat folder); refused when deleting is not safe (see module doc)."""
    if not prefix.strip("/"):
        raise PublisherError(
            "delete_removed_images needs a prefix: with none, every object at the bucket's root would be in scope. "
            "Set the prefix param, or leave delete_removed_images off"
        )
    header = read_manifest_header(manifest_file)
    unreadable = [s for s in header.get("skipped", []) if str(s.get("reason", "")).startswith("cannot read")]
    if unreadable:
        first = unreadable[0]
        raise PublisherError(
            f"not deleting anything: the scan could not read {len(unreadable)} files or folders of the images "
            f"folder (e.g. {first['file_path']}: {first['reason']}), whose objects would look removed. "
            "Fix their permissions and run again"
        )
    if header.get("date_folders") is None:
        return None
    with_images = {image.get("image_date") for image in iter_manifest_images(manifest_file)}
    return sorted(day for day in header["date_folders"] if day in with_images)


def plan_removals(
    manifest_file: str | os.PathLike,
    listed: Iterable[str],
    prefix: str,
    days: list[str] | None,
    live_days: Mapping[str, str] | None,
    catalog_ids: set[str],
) -> list[str]:
    """The keys in scope that no image of the manifest has and no live product points at, sorted."""
    kept = {image_key(prefix, image) for image in iter_manifest_images(manifest_file)}
    candidates = (k for k in listed if k not in kept and in_scope(k, prefix, days))
    return sorted(k for k in candidates if not _live(k, prefix, days, live_days, catalog_ids))


def _live(
    key: str, prefix: str, days: list[str] | None, live_days: Mapping[str, str] | None, catalog_ids: set[str]
) -> bool:
    """Whether a dated key is the image the live document of a product still in the catalog points at (without
    the published state to say which day is live, any day of a product still in the catalog counts)."""
    if days is None:  # a flat run republished every product of the catalog with the folder's images
        return False
    day, name = key[len(prefix.strip("/")) + 1 :].split("/", 1)
    pid = PurePosixPath(name).stem
    return pid in catalog_ids and (live_days is None or live_days.get(pid) == day)


def list_scope(store, target: S3Target, prefix: str, days: list[str] | None) -> list[str]:
    """The keys under the scope's prefixes: the prefix (flat), or each of the run's days' folders."""
    return [key for key, _, _ in iter_objects(store, target, scope_prefixes(prefix, days))]


PENDING_FORMAT = "catalog-publisher/pending-deletions"
PENDING_VERSION = 2  # 2: each key with the topic's end offsets when it was marked; 1 (no format field): keys only

Ends = dict[int, int] | None  # partition -> end offset; None: not known (a version 1 file's keys)


def pending_name(bucket: str) -> str:
    """Where the latest pending deletions of `bucket` are kept (RunArtifacts.fetch_latest, publish_latest)."""
    return f"data/pending-deletions-{bucket}.json"


def load_pending(path: str | os.PathLike | None, bucket: str, prefix: str, topic: str = "") -> dict[str, Ends]:
    """The keys marked pending for this bucket and prefix, each with the catalog topic's end offsets when it was
    marked (none when the file is missing, foreign or corrupt; None ends for a version 1 file's keys, and for
    keys marked against another topic than `topic`: they wait for this topic's current end)."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if (data.get("bucket"), data.get("prefix")) != (bucket, prefix.strip("/")):
            return {}
        if data.get("format") != PENDING_FORMAT:  # version 1
            return {str(key): None for key in data["keys"]}
        if data.get("version") != PENDING_VERSION:
            raise ValueError(f"version {data.get('version')} is not one this code reads")
        same_topic = data.get("topic") == topic
        return {str(k): _ends(mark["ends"]) if same_topic else None for mark in data["marks"] for k in mark["keys"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the pending deletions %s (%s): nothing is deleted this run", path, exc)
    return {}


def _ends(value: Any) -> Ends:
    return None if value is None else {int(p): int(o) for p, o in value.items()}


def save_pending(path: str | os.PathLike, bucket: str, prefix: str, pending: dict[str, Ends], topic: str = "") -> None:
    """The pending keys, grouped by the topic's ends when they were marked (one group a run, as a rule)."""
    marks: dict[str, dict[str, Any]] = {}
    for key, ends in pending.items():
        mark = marks.setdefault(json.dumps(ends, sort_keys=True), {"ends": ends, "keys": []})
        mark["keys"].append(key)
    document = {"format": PENDING_FORMAT, "version": PENDING_VERSION, "bucket": bucket, "prefix": prefix.strip("/")}
    document["topic"] = topic
    write_json(path, {**document, "marks": list(marks.values())})


def indexed(ends: Ends, committed: dict[int, int] | None, current: Ends) -> bool:
    """Whether the index has applied what the topic held when a key was marked: the indexer's group has committed
    up to those ends on every partition (a key whose ends are unknown waits for the topic's `current` ends). Not
    when the group's position cannot be told."""
    ends = ends if ends is not None else current
    if committed is None or ends is None:
        return False
    return all(committed.get(partition, -1) >= end for partition, end in ends.items() if end > 0)


def check_removals(keys: list[str], max_deletions: int, where: str) -> None:
    """Fail, deleting nothing, when more objects would go than allowed."""
    if len(keys) > max_deletions:
        examples = ", ".join(keys[:_EXAMPLES])
        raise PublisherError(
            f"{len(keys)} objects in {where} have no image in the images folder any more (e.g. {examples}), more "
            f"than max_deletions {max_deletions}; nothing was deleted. If they were meant to go, run again with a "
            "higher max_deletions"
        )


def delete_objects(store, target: S3Target, keys: list[str]) -> int:
    """Delete the keys (DeleteObjects, 1000 a request); the count deleted."""
    import obstore
    from obstore.exceptions import BaseError

    from include.catalog_publisher.s3_errors import as_error

    for start in range(0, len(keys), DELETE_CHUNK):
        try:
            obstore.delete(store, keys[start : start + DELETE_CHUNK])
        except (BaseError, OSError) as exc:
            raise as_error(exc, target.where, f"deleted {start} of {len(keys)} removed images' objects") from None
        log.info("deleted %d of %d objects of removed images", min(start + DELETE_CHUNK, len(keys)), len(keys))
    return len(keys)


def summary(deleted: list[str], pending: list[str], dry_run: bool) -> dict[str, Any]:
    """What the step reports (XCom, the run report): deleted now (or, dry, would be), and marked for the next run."""
    return {
        "deleted": len(deleted),
        "pending": len(pending),
        "examples": (deleted or pending)[:_EXAMPLES],
        "dry_run": dry_run,
    }
