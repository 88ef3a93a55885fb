"""What the two DAGs share: default_args, time zone, start date, schedule, the params' validation rules.

Each value is written once, here or in defaults.py (which the runbook commands read too), so the two
forms and the commands cannot drift apart. Imported when the DAG files are parsed, so cheap: no
clients, no files (beyond the configured time zone's rules, read once per process).
"""

from __future__ import annotations

from datetime import timedelta

import airflow
import pendulum
from packaging.version import Version

from include.catalog_publisher import settings
from include.catalog_publisher.date_folders import LAYOUTS
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError

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
    name = settings.value(settings.TIMEZONE, name)
    try:
        return pendulum.timezone(name)
    except ValueError as exc:  # pendulum's InvalidTimezone, zoneinfo's malformed keys
        raise settings.invalid(settings.TIMEZONE, name, "an IANA time zone name such as Europe/Berlin") from exc


def publisher_schedule(value: str | None = None, tz: pendulum.Timezone | None = None):
    """The publisher's schedule from $PUBLISHER_SCHEDULE: a cron expression or preset becomes a data-interval
    timetable in tz (Airflow 3 turns a bare "@daily" into a zero-length interval at the run's own time, so
    the 00:00 run would take the day just begun); "none" means manual runs only."""
    value = settings.value(settings.SCHEDULE, value)
    if value.lower() == "none":
        return None
    if value in ("@once", "@continuous"):  # not intervals: Airflow's own timetables for these
        return value
    from airflow.sdk.exceptions import AirflowTimetableInvalid

    timetable = CronDataIntervalTimetable(value, timezone=tz or TIMEZONE)
    try:
        timetable.validate()
    except AirflowTimetableInvalid as exc:
        what = f"a cron expression or preset (@daily, ...) nor 'none' ({exc})"
        raise settings.invalid(settings.SCHEDULE, value, what) from exc
    return timetable


def manifest_shards(value: str | None = None) -> list[dict[str, int]]:
    """build_manifest's shards, from $PUBLISHER_MANIFEST_SHARDS (1 by default): one mapped task each."""
    count = settings.value(settings.MANIFEST_SHARDS, value)
    return [{"index": index, "count": count} for index in range(count)]


def lookback_days(value: str | None = None) -> int:
    """How many date folders before its own a scheduled run also takes, from $PUBLISHER_LOOKBACK_DAYS (2 by
    default): a file written into a day's folder after that day's run is published by a later scheduled run
    instead of never. Manual runs and backfills take exactly their days."""
    return settings.value(settings.LOOKBACK_DAYS, value)


def mapped_values(values) -> list:
    """A mapped task's outputs (a lazy XCom sequence) as a list, read by position: indexing reads exactly len()
    values, iterating probes one past the end (a logged 404)."""
    return [values[i] for i in range(len(values))]


TIMEZONE = dag_timezone()
START_DATE = pendulum.datetime(2025, 1, 1, tz=TIMEZONE)
