"""What a DAG run may write and delete: the bucket and prefix, the topic and the index come from allowed places only.

Anyone who may trigger a run chooses `bucket`, `prefix`, `topic` (the publisher), `index` and `topic` (the indexer)
and `max_deletions`; without a limit, two runs with delete_removed_images could empty any prefix the AWS connection
may write, a chosen topic could get a tombstone for each of its keys, a chosen index documents written and deleted.
So a run writes only where the deployment allows, checked by its first task, before anything is written:

  PUBLISHER_ALLOWED_OUTPUTS  comma-separated s3://bucket/prefix (that prefix and below; s3://bucket: the whole
                             bucket), kafka://topic (its dead-letter topic <topic>.dlq with it) and
                             elasticsearch://index entries; `*` in a name matches any run of characters
                             (s3://catalog-*/products, kafka://*). Default: exactly the configured ones,
                             s3://$PUBLISHER_BUCKET/products, kafka://products and elasticsearch://products
  PUBLISHER_MAX_DELETIONS    the most products (tombstones) or objects one run may remove; the max_deletions param
                             cannot go above it. Default 1000, the param's default.

The runbook's commands are not limited: whoever runs them chooses their outputs already.
"""

from __future__ import annotations

import fnmatch
import re

from include.catalog_publisher import defaults, settings
from include.catalog_publisher.errors import PublisherError

_ENTRY = re.compile(r"(s3|kafka|elasticsearch)://([^/]+)/*(.*?)/*")


def allowed_outputs() -> dict[str, list[tuple[str, str]]]:
    """kind ("s3", "kafka", "elasticsearch") -> (name pattern, prefix) pairs a run may write to."""
    configured = f"s3://{settings.value(settings.BUCKET)}/{defaults.DEFAULT_PREFIX},kafka://{defaults.DEFAULT_TOPIC}"
    setting = settings.value(settings.ALLOWED_OUTPUTS) or f"{configured},elasticsearch://{defaults.DEFAULT_INDEX}"
    allowed: dict[str, list[tuple[str, str]]] = {"s3": [], "kafka": [], "elasticsearch": []}
    for entry in (e.strip() for e in setting.split(",") if e.strip()):
        match = _ENTRY.fullmatch(entry)
        if not match or (match.group(3) and match.group(1) != "s3"):
            what = f"a list of s3://bucket[/prefix], kafka://topic and elasticsearch://index entries ({entry!r} is not)"
            raise settings.invalid(settings.ALLOWED_OUTPUTS, setting, what)
        allowed[match.group(1)].append((match.group(2), match.group(3)))
    return allowed


def max_deletions_ceiling() -> int:
    """$PUBLISHER_MAX_DELETIONS: the deployment's ceiling on what one run may remove."""
    return settings.value(settings.MAX_DELETIONS)


def _allowed(kind: str, name: str, prefix: str = "") -> bool:
    for pattern, allowed_prefix in allowed_outputs()[kind]:
        inside = not allowed_prefix or prefix == allowed_prefix or prefix.startswith(allowed_prefix + "/")
        if fnmatch.fnmatchcase(name, pattern) and inside:
            return True
    return False


def _refuse(what: str) -> PublisherError:
    listed = ", ".join(
        f"{kind}://{name}/{prefix}".rstrip("/") for kind, pairs in allowed_outputs().items() for name, prefix in pairs
    )
    return PublisherError(
        f"{what} is outside the allowed outputs ({listed}); choose one of them, or have an administrator add it to "
        f"{settings.ALLOWED_OUTPUTS.name} in the workers' environment. Nothing was written"
    )


def check_bucket(bucket: str, prefix: str) -> None:
    prefix = prefix.strip("/")
    if not _allowed("s3", bucket, prefix):
        raise _refuse(f"bucket {bucket!r} with prefix {prefix!r}")


def check_topic(topic: str) -> None:
    if not _allowed("kafka", topic):
        raise _refuse(f"topic {topic!r}")


def check_index(index: str) -> None:
    if not _allowed("elasticsearch", index):
        raise _refuse(f"index {index!r}")


def check_max_deletions(max_deletions: int) -> None:
    ceiling = max_deletions_ceiling()
    if max_deletions > ceiling:
        raise PublisherError(
            f"max_deletions {max_deletions} is above this deployment's ceiling of {ceiling} "
            f"({settings.MAX_DELETIONS.name}); "
            "choose a lower value, or have an administrator raise the setting. Nothing was written"
        )


def check_publisher(params: dict) -> None:
    """Everything a publisher run would write or delete, before its first write."""
    check_bucket(params["bucket"], params["prefix"] or "")
    check_topic(params["topic"])
    check_max_deletions(params["max_deletions"])


def check_indexer(params: dict, topics: list[str]) -> None:
    """Everything an indexer run would write or delete (its index, and each topic's dead-letter topic)."""
    check_index(params["index"])
    for topic in topics:
        check_topic(topic)
