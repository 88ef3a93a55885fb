"""Every environment setting of the pipeline, in one place: its name, default, kind and meaning.

Why: one parser and one error for all of them ("NAME='value' is not ...; fix it or unset it (default ...)"), and
docs/configuration.md's settings table written from this list (`python -m include.catalog_publisher.settings`;
tests/unit/test_docs.py keeps them equal). A setting is read where it is used, never cached: tasks run in
processes of their own, and each reads the environment its deployment gives it.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from include.catalog_publisher import defaults
from include.catalog_publisher.errors import PublisherError

OFF_WORDS = ("none", "off", "never")


@dataclass(frozen=True)
class Setting:
    """kind: "text" (taken as given, checked where it is used), "whole" or "number" (from `low` to `high`).
    `off`: "none", "off" or "never" turns it off (the value None). `shown`: the default as the docs say it."""

    name: str
    default: Any
    meaning: str
    kind: str = "text"
    low: float = 0
    high: float | None = None
    off: bool = False
    shown: str = ""

    def expected(self) -> str:
        kind = "a whole number" if self.kind == "whole" else "a number"
        bounds = f"from {self.low:g} to {self.high:g}" if self.high is not None else f"of at least {self.low:g}"
        return f"{kind} {bounds}" + (" or 'none'" if self.off else "")

    def default_text(self) -> str:
        return self.shown or f"`{self.default}`"


def value(setting: Setting, given: str | None = None) -> Any:
    """The setting's value: `given`, else the environment's; its default when unset or empty."""
    raw = (os.environ.get(setting.name, "") if given is None else given).strip()
    if not raw:
        return setting.default
    if setting.off and raw.lower() in OFF_WORDS:
        return None
    if setting.kind == "text":
        return raw
    try:
        number: float = int(raw) if setting.kind == "whole" else float(raw)
    except ValueError:
        raise invalid(setting, raw) from None
    if not math.isfinite(number) or number < setting.low or (setting.high is not None and number > setting.high):
        raise invalid(setting, raw)
    return number


def invalid(setting: Setting, raw: str, what: str = "") -> PublisherError:
    """The one error of a bad setting; `what` says what the value is not (else its kind and bounds)."""
    default = setting.default_text().replace("`", "")
    return PublisherError(
        f"{setting.name}={raw!r} is not {what or setting.expected()}; fix it or unset it (default: {default})"
    )


BUCKET = Setting(
    "PUBLISHER_BUCKET",
    "product-images",
    "the default of the publisher's `bucket` param, and the bucket of the default allowed outputs",
)
IMAGES_DIR = Setting(
    "PUBLISHER_IMAGES_DIR",
    defaults.IMAGES_DIR,
    "the default of the publisher's `images_dir` param (what scheduled runs read): a folder, or `s3://bucket/prefix` "
    "when workers share no disk",
)
CATALOG_FILE = Setting(
    "PUBLISHER_CATALOG_FILE",
    defaults.CATALOG_FILE,
    "the default of the publisher's `catalog_file` param (what scheduled runs read): a path or `s3://bucket/key`",
)
SCHEDULE = Setting(
    "PUBLISHER_SCHEDULE",
    "@daily",
    "the publisher's schedule: a cron expression or preset (`@hourly`, ...), made a data-interval timetable in "
    "`PUBLISHER_TIMEZONE`, so the run at 00:00 covers the day that ended; `none` for manual runs only",
)
TIMEZONE = Setting(
    "PUBLISHER_TIMEZONE",
    "UTC",
    "the IANA time zone (`Europe/Berlin`) of the schedule's midnights and of the `YYYY-MM-DD` image folders",
)
LOOKBACK_DAYS = Setting(
    "PUBLISHER_LOOKBACK_DAYS",
    2,
    "how many date folders before its own day a scheduled run also takes, for files that landed late",
    "whole",
    0,
    31,
)
MANIFEST_SHARDS = Setting(
    "PUBLISHER_MANIFEST_SHARDS",
    1,
    "how many `build_manifest` tasks share a run's images (by product id), each on any worker",
    "whole",
    1,
    256,
)
ARTIFACTS_URL = Setting(
    "PUBLISHER_ARTIFACTS_URL",
    "data/runs",
    "where runs keep their artifacts, the latest copies and the state files: a local folder, or "
    "`s3://bucket/prefix` when workers share no disk",
    shown="`data/runs` under the project home",
)
ARTIFACTS_CONN_ID = Setting(
    "PUBLISHER_ARTIFACTS_CONN_ID",
    "aws_default",
    "the Airflow AWS connection that reaches an `s3://` `PUBLISHER_ARTIFACTS_URL`",
)
IMAGES_CONN_ID = Setting(
    "PUBLISHER_IMAGES_CONN_ID",
    "aws_default",
    "the Airflow AWS connection that reads an `s3://` `images_dir`; when it is the upload's (`aws_default`), images "
    "are copied on the server, else streamed through the worker",
)
ALLOWED_INPUTS = Setting(
    "PUBLISHER_ALLOWED_INPUTS",
    "data",
    "comma-separated folders (relative ones start at the project home) and `s3://bucket[/prefix]` locations a run "
    "may read `images_dir` and `catalog_file` from; the artifact location is always allowed",
)
ALLOWED_OUTPUTS = Setting(
    "PUBLISHER_ALLOWED_OUTPUTS",
    "",
    "comma-separated `s3://bucket[/prefix]`, `kafka://topic` and `elasticsearch://index` entries (`*` matches any "
    "run of characters) a run may write to",
    shown="`s3://$PUBLISHER_BUCKET/products,kafka://products,elasticsearch://products`",
)
MAX_DELETIONS = Setting(
    "PUBLISHER_MAX_DELETIONS",
    1000,
    "the most the `max_deletions` param may be; the form's default follows it down",
    "whole",
)
RETENTION_DAYS = Setting(
    "PUBLISHER_RETENTION_DAYS",
    30.0,
    "run folders not written for this many days are removed; `none` keeps them",
    "number",
    off=True,
    shown="`30`",
)
RETENTION_RUNS = Setting(
    "PUBLISHER_RETENTION_RUNS",
    None,
    "run folders beyond this many most recent runs are removed",
    "whole",
    1,
    off=True,
    shown="none (no limit)",
)
RETENTION_GRACE_HOURS = Setting(
    "PUBLISHER_RETENTION_GRACE_HOURS",
    24.0,
    "a run folder written within this many hours is never removed (its run may still be going)",
    "number",
    off=True,
    shown="`24`",
)
UPLOAD_MAX_INFLIGHT_MB = Setting(
    "PUBLISHER_UPLOAD_MAX_INFLIGHT_MB",
    256.0,
    "the most megabytes of file contents one upload task holds, whatever `upload_concurrency` says (16 MB is what "
    "one file needs held at once)",
    "number",
    16,
    shown="`256`",
)
TOPIC_PARTITIONS = Setting("PUBLISHER_TOPIC_PARTITIONS", 3, "partitions of a topic the pipeline creates", "whole", 1)
TOPIC_REPLICATION_FACTOR = Setting(
    "PUBLISHER_TOPIC_REPLICATION_FACTOR",
    None,
    "replication factor of a topic the pipeline creates (1 on the compose stack)",
    "whole",
    1,
    shown="3, or the number of brokers when fewer",
)
TOPIC_RETENTION_MS = Setting(
    "PUBLISHER_TOPIC_RETENTION_MS",
    None,
    "unset, the catalog topic is created compacted (the latest message of every product kept, a tombstone removes "
    "one, so a new index can always be rebuilt by replaying it); set, with time-based retention of this many "
    "milliseconds instead",
    "whole",
    1,
    shown="unset: compacted",
)
DLQ_RETENTION_MS = Setting(
    "PUBLISHER_DLQ_RETENTION_MS",
    30 * 24 * 3600 * 1000,
    "how long the dead-letter topic `<topic>.dlq` keeps messages, in milliseconds",
    "whole",
    1,
    shown="30 days",
)
INDEX_VERSIONS_KEPT = Setting(
    "PUBLISHER_INDEX_VERSIONS_KEPT",
    2,
    "earlier versions of the search index a rebuild keeps for a rollback; older ones are deleted",
    "whole",
    0,
)
HOME = Setting(
    "CATALOG_PUBLISHER_HOME",
    "",
    "where relative paths (`data/...`) of params and settings resolve",
    shown="the folder that holds `include/`",
)

SETTINGS = (
    BUCKET,
    IMAGES_DIR,
    CATALOG_FILE,
    SCHEDULE,
    TIMEZONE,
    LOOKBACK_DAYS,
    MANIFEST_SHARDS,
    ARTIFACTS_URL,
    ARTIFACTS_CONN_ID,
    IMAGES_CONN_ID,
    ALLOWED_INPUTS,
    ALLOWED_OUTPUTS,
    MAX_DELETIONS,
    RETENTION_DAYS,
    RETENTION_RUNS,
    RETENTION_GRACE_HOURS,
    UPLOAD_MAX_INFLIGHT_MB,
    TOPIC_PARTITIONS,
    TOPIC_REPLICATION_FACTOR,
    TOPIC_RETENTION_MS,
    DLQ_RETENTION_MS,
    INDEX_VERSIONS_KEPT,
    HOME,
)


def markdown_table() -> str:
    """docs/configuration.md's table of the pipeline's settings."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        kind = f"{setting.expected()}: " if setting.kind != "text" else ""
        rows.append(f"| `{setting.name}` | {setting.default_text()} | {kind}{setting.meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
