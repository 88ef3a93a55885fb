"""What the two DAGs share: default_args, time zone, start date, schedule, param defaults, validation rules.

Each value is written once, here or in defaults.py (which the runbook commands read too), so the two
forms and the commands cannot drift apart. Imported when the DAG files are parsed, so cheap: no
clients, no files (beyond the configured time zone's rules, read once per process).
"""

from __future__ import annotations

import os
from datetime import timedelta

import airflow
import pendulum
from packaging.version import Version

from include.catalog_publisher import defaults
from include.catalog_publisher.allowed_outputs import max_deletions_ceiling
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.partitions import LAYOUTS
from include.catalog_publisher.run_artifacts import latest_copy

# The oldest Airflow the DAGs run on: retry policies (ExceptionRetryPolicy) came with 3.3. requirements.txt,
# requirements-managed.txt and docs/deploying.md say the same; tests/dags/test_airflow_floor.py keeps them equal.
AIRFLOW_FLOOR = "3.3.0"

try:  # before anything of airflow.sdk is imported: on an older Airflow, the version needed, not a missing symbol
    if Version(airflow.__version__).release < Version(AIRFLOW_FLOOR).release:
        raise ImportError(f"Airflow {airflow.__version__}")
    from airflow.sdk import CronDataIntervalTimetable, ExceptionRetryPolicy, RetryAction, RetryRule
except ImportError as exc:
    raise ImportError(
        f"catalog-publisher's DAGs need Apache Airflow {AIRFLOW_FLOOR} or newer (retry policies); this environment "
        f"runs Airflow {getattr(airflow, '__version__', 'of an unknown version')}. Upgrade Airflow, or choose an "
        "Astro Runtime, MWAA or Cloud Composer version that runs Airflow 3.3 (docs/deploying.md)"
    ) from exc

# Retry or fail, decided by the exception (Airflow 3.3's retry policies): a service that could not be reached
# or did not confirm the work may pass on its own; bad input or configuration will not, so it fails at once.
# Any other exception takes the task's retries as usual. The more specific rule comes first.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=ServiceUnavailableError,
            action=RetryAction.RETRY,
            reason="a service could not be reached or did not confirm the work; retried with backoff",
        ),
        RetryRule(
            exception=PublisherError,
            action=RetryAction.FAIL,
            reason="bad input or configuration: a retry cannot fix it; the error names what to change",
        ),
    ]
)

DEFAULT_ARGS = {
    "retries": 2,
    "retry_policy": RETRY_POLICY,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
}

# JSON Schema rules of the forms. The REST API and the form answer a bad value with the rule that
# failed and the param's schema, title and description_md included, so each description states the rule.
PATH_PATTERN = r"^[^\x00-\x1f]+$"  # a path as typed: no control characters (a pasted newline, say)
TOPIC_PATTERN = r"^[a-zA-Z0-9._-]{1,249}$"  # Kafka's topic name rule
# S3 bucket naming rules, one rule per keyword so the message names the one broken.
BUCKET_RULES = {
    "minLength": 3,
    "maxLength": 63,
    "pattern": r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
    "not": {"anyOf": [{"pattern": r"\.\."}, {"pattern": r"^\d+\.\d+\.\d+\.\d+$"}]},  # no "..", not an IP address
}
IMAGE_LAYOUTS = list(LAYOUTS)
ENCRYPTIONS = ["bucket default", "AES256", "aws:kms"]


def dag_timezone(name: str | None = None) -> pendulum.Timezone:
    """The time zone that dates the folders: $PUBLISHER_TIMEZONE (an IANA name), UTC by default."""
    name = name if name is not None else os.environ.get(defaults.TIMEZONE_ENV, "")
    try:
        return pendulum.timezone(name.strip() or defaults.DEFAULT_TIMEZONE)
    except ValueError as exc:  # pendulum's InvalidTimezone, zoneinfo's malformed keys
        problem = f"{defaults.TIMEZONE_ENV}={name!r} is not a time zone name; use an IANA name such as Europe/Berlin"
        raise PublisherError(problem) from exc


def publisher_schedule(value: str | None = None, tz: pendulum.Timezone | None = None):
    """The publisher's schedule from $PUBLISHER_SCHEDULE: a cron expression or preset becomes a data-interval
    timetable in tz (Airflow 3 turns a bare "@daily" into a zero-length interval at the run's own time, so
    the 00:00 run would take the day just begun); "none" means manual runs only."""
    value = (value if value is not None else os.environ.get(defaults.SCHEDULE_ENV, "")).strip()
    value = value or defaults.DEFAULT_SCHEDULE
    if value.lower() == "none":
        return None
    if value in ("@once", "@continuous"):  # not intervals: Airflow's own timetables for these
        return value
    from airflow.sdk.exceptions import AirflowTimetableInvalid

    timetable = CronDataIntervalTimetable(value, timezone=tz or TIMEZONE)
    try:
        timetable.validate()
    except AirflowTimetableInvalid as exc:
        problem = f"{defaults.SCHEDULE_ENV}={value!r} is neither a cron expression or preset (@daily, ...) nor 'none'"
        raise PublisherError(f"{problem}: {exc}") from exc
    return timetable


def manifest_shards(value: str | None = None) -> list[dict[str, int]]:
    """build_manifest's shards, from $PUBLISHER_MANIFEST_SHARDS (1 by default): one mapped task each."""
    env, default, most = defaults.MANIFEST_SHARDS_ENV, defaults.DEFAULT_MANIFEST_SHARDS, defaults.MAX_MANIFEST_SHARDS
    count = defaults.whole_number(env, value, default, 1, most)
    return [{"index": index, "count": count} for index in range(count)]


def lookback_days(value: str | None = None) -> int:
    """How many date folders before its own a scheduled run also takes, from $PUBLISHER_LOOKBACK_DAYS (2 by
    default): a file written into a day's folder after that day's run is published by a later scheduled run
    instead of never. Manual runs and backfills take exactly their days."""
    return defaults.whole_number(defaults.LOOKBACK_DAYS_ENV, value, defaults.DEFAULT_LOOKBACK_DAYS, 0, 31)


def mapped_values(values) -> list:
    """A mapped task's outputs (a lazy XCom sequence) as a list, read by position: indexing reads exactly len()
    values, iterating probes one past the end (a logged 404)."""
    return [values[i] for i in range(len(values))]


TIMEZONE = dag_timezone()
START_DATE = pendulum.datetime(2025, 1, 1, tz=TIMEZONE)

# The forms' defaults, in the order the forms show them (most used first).
PUBLISHER_PARAMS = {
    # what to publish
    "images_dir": defaults.IMAGES_DIR,
    "day": None,  # the run's data interval
    "catalog_file": defaults.CATALOG_FILE,
    "images_layout": "auto",
    "force_reupload": False,
    "republish_all": False,  # only what changed since the last publish, plus tombstones
    "accept_partition_change": False,  # a topic that gained partitions is refused
    "dry_run": False,
    # where it goes
    "bucket": os.environ.get(defaults.BUCKET_ENV) or defaults.DEFAULT_BUCKET,
    "prefix": defaults.DEFAULT_PREFIX,
    "topic": defaults.DEFAULT_TOPIC,
    "public_base_url": None,  # S3 addresses
    # how: batching and concurrency
    "batch_size": defaults.DEFAULT_BATCH_IMAGES,
    "upload_concurrency": defaults.DEFAULT_UPLOAD_CONCURRENCY,
    # safety: encryption and failures
    "server_side_encryption": "bucket default",
    "sse_kms_key_id": None,  # the account's aws/s3 key
    "delete_removed_images": False,  # opt-in, like aws s3 sync --delete
    "max_deletions": min(defaults.DEFAULT_MAX_DELETIONS, max_deletions_ceiling()),  # the form's default is allowed
    "max_failed_percent": defaults.DEFAULT_MAX_FAILED_PERCENT,
}
INDEXER_PARAMS = {
    "topic": defaults.DEFAULT_TOPIC,
    "catalog_file": latest_copy("publish_product_images", defaults.UPDATED_CATALOG_FILE),  # the last publish's
    "index": defaults.DEFAULT_INDEX,
    "group_id": defaults.DEFAULT_GROUP_ID,
    "batch_size": defaults.DEFAULT_INDEX_BATCH,
    # One consumer per topic: more pay off only against an Elasticsearch that indexes in parallel
    # (bench/indexer_consumers.py compares them), and every consumer joining costs a group rebalance.
    "consumers": 1,
}
