"""How a DAG run selects its images: date folders, so backfills re-upload exactly their dates.

An images directory is *daily* when it holds folders named YYYY-MM-DD (images/2025-06-01/...).
A run then takes the folders of the days it covers (`covered_days`), dated in the DAG's time zone:

- the `day` param, when set: that day's folder;
- else the days of the run's data interval [start, end): a scheduled daily run at 00:00 on D+1,
  and a backfill run for D, both cover [D, D+1) and take folder D; a manual run gets the last
  complete day before its logical date (Airflow's CronDataIntervalTimetable infers that);
- else (a run without a logical date, or an empty interval as a schedule of "none" gives) the
  last complete day before the run's time: yesterday, for a run triggered now.

A *flat* directory is taken whole by every run. `auto` (the default) decides by looking for date
folders. Modification times are deliberately not used: copies, restores and rsync change them,
while a folder name states what the operator meant.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path

from include.catalog_publisher.errors import PublisherError

DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
LAYOUTS = ("auto", "flat", "daily")


def date_folders(images_dir: str | os.PathLike) -> list[str]:
    """The YYYY-MM-DD folders directly inside images_dir (real directories, not links), sorted."""
    root = Path(images_dir)
    if not root.is_dir():
        return []
    entries = os.scandir(root)
    return sorted(e.name for e in entries if DATE_FOLDER.match(e.name) and e.is_dir(follow_symlinks=False))


def _local(moment: datetime, tz: tzinfo) -> datetime:
    """moment on tz's wall clock (Airflow hands tasks UTC times: their .date() is UTC's day, not tz's)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(tz)


def covered_days(
    day: str | None,
    start: datetime | None,
    end: datetime | None,
    run_after: datetime,
    tz: tzinfo,
) -> tuple[date, date]:
    """The days [first, last) a run covers, dated in tz: the day param, the data interval, or the last complete day."""
    if day:
        first = date.fromisoformat(day)
        return first, first + timedelta(days=1)
    if start is not None and end is not None and end > start:
        local_end = _local(end, tz)
        last = local_end.date() if local_end.time() == time.min else local_end.date() + timedelta(days=1)
        return _local(start, tz).date(), last  # an interval ending mid-day still covers that day
    today = _local(start or run_after, tz).date()
    return today - timedelta(days=1), today


def run_dates(start: date, end: date) -> list[str]:
    """The days (YYYY-MM-DD) of [start, end), or start's day when that is empty."""
    days = [(start + timedelta(days=n)).isoformat() for n in range((end - start).days)]
    return days or [start.isoformat()]


def select_folders(
    images_dir: str | os.PathLike,
    layout: str,
    start: date | None,
    end: date | None,
) -> list[str] | None:
    """None to take the whole directory, else the date folders (existing or not) of the days [start, end)."""
    if layout not in LAYOUTS:
        raise PublisherError(f"images layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    daily = layout == "daily" or (layout == "auto" and bool(date_folders(images_dir)))
    if not daily:
        return None
    if isinstance(start, datetime) or isinstance(end, datetime):
        raise TypeError("select_folders takes dates (from covered_days): a datetime's day depends on its time zone")
    if start is None:
        raise PublisherError("a date-partitioned images directory needs the run's days; or set images_layout to flat")
    return run_dates(start, end if end is not None else start)
