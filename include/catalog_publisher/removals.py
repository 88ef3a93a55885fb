"""Deleting the objects of images removed from the images folder: opt-in, and guarded.

Which objects: those of the run's scope (a flat folder: directly under the prefix; date folders: under
`{prefix}/{day}/` for the run's days only) whose key no image of the run's manifest has. Other prefixes,
other days and deeper keys are never touched.

The guards users of `aws s3 sync --delete`, s5cmd and rclone ask for:
- no deletion at all when the scan could not read a file or folder of the source (an unreadable folder looks
  exactly like a removed one), nor when the folder is missing or empty (the manifest step fails or skips first);
- more than `max_deletions` objects: the step fails before deleting anything;
- it runs after the catalog was published without those images, so the index stops pointing at them first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import iter_manifest_images, read_manifest_header
from include.catalog_publisher.s3_store import S3Target, image_key

log = logging.getLogger(__name__)

DELETE_CHUNK = 1000  # keys per DeleteObjects request (S3's limit)
_EXAMPLES = 5


def in_scope(key: str, prefix: str, days: list[str] | None) -> bool:
    """Whether a key is one this run's images could have: {prefix}/{file}, or {prefix}/{day}/{file} for its days."""
    prefix = prefix.strip("/")
    rest = key[len(prefix) + 1 :] if prefix else key
    if prefix and not key.startswith(prefix + "/"):
        return False
    if days is None:
        return "/" not in rest
    day, _, name = rest.partition("/")
    return day in days and name != "" and "/" not in name


def plan_removals(manifest_file: str, existing_keys: Iterable[str], prefix: str) -> list[str]:
    """The keys in scope that no image of the manifest has, sorted; refused when the scan could not read
    part of the source (see module doc)."""
    header = read_manifest_header(manifest_file)
    unreadable = [s for s in header.get("skipped", []) if str(s.get("reason", "")).startswith("cannot read")]
    if unreadable:
        first = unreadable[0]
        raise PublisherError(
            f"not deleting anything: the scan could not read {len(unreadable)} files or folders of the images "
            f"folder (e.g. {first['file_path']}: {first['reason']}), whose objects would look removed. "
            "Fix their permissions and run again"
        )
    days = header.get("date_folders")
    kept = {image_key(prefix, image) for image in iter_manifest_images(manifest_file)}
    return sorted(k for k in existing_keys if k not in kept and in_scope(k, prefix, days))


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


def summary(keys: list[str], deleted: int, dry_run: bool) -> dict[str, Any]:
    """What the step reports (XCom, the run report)."""
    return {"removed_objects": len(keys), "deleted": deleted, "examples": keys[:_EXAMPLES], "dry_run": dry_run}
