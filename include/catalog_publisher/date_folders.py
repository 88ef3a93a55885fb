"""How a DAG run selects its images: date folders, so backfills re-upload exactly their dates.

An images directory is *daily* when it holds folders named YYYY-MM-DD (images/2025-06-01/...).
A run then takes the folders of the days it covers (`covered_days`), dated in the DAG's time zone:

- the `day` param, when set: that day's folder;
- else the days of the run's data interval [start, end): a scheduled daily run at 00:00 on D+1,
  and a backfill run for D, both cover [D, D+1) and take folder D; a manual run gets the last
  complete day before its logical date (Airflow's CronDataIntervalTimetable infers that);
- else (a run without a logical date, or an empty interval as a schedule of "none" gives) the
  last complete day before the run's time: yesterday, for a run triggered now.

A scheduled run also takes the `lookback_days` days before its own ($PUBLISHER_LOOKBACK_DAYS): a file written
into a day's folder after that day's run is published by one of the next runs (unchanged files cost a stat).
Manual runs and backfills take exactly their days.

A *flat* directory is taken whole by every run. `auto` (the default) decides by looking for date
folders; `flat` over a folder of date folders is refused (it would take a product's images of every day in
path order, the oldest first, without the day the index keeps the newest of). Modification times are
deliberately not used: copies, restores and rsync change them, while a folder name states what the
operator meant.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
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
    lookback_days: int = 0,
) -> tuple[date, date]:
    """The days [first, last) a run covers, dated in tz: the day param (that day alone), else the data interval or
    the last complete day, with the lookback_days before it."""
    if day:
        first = date.fromisoformat(day)
        return first, first + timedelta(days=1)
    if start is not None and end is not None and end > start:
        local_end = _local(end, tz)
        last = local_end.date() if local_end.time() == time.min else local_end.date() + timedelta(days=1)
        first = _local(start, tz).date()  # an interval ending mid-day still covers that day
    else:
        last = _local(start or run_after, tz).date()
        first = last - timedelta(days=1)
    return first - timedelta(days=lookback_days), last


def run_dates(start: date, end: date) -> list[str]:
    """The days (YYYY-MM-DD) of [start, end), or start's day when that is empty."""
    days = [(start + timedelta(days=n)).isoformat() for n in range((end - start).days)]
    return days or [start.isoformat()]


def select_folders(
    images_dir: str | os.PathLike,
    layout: str,
    start: date | None,
    end: date | None,
    list_folders: Callable[[], list[str]] | None = None,
) -> list[str] | None:
    """None to take the whole directory, else the date folders (existing or not) of the days [start, end).
    `list_folders`: how to find the date folders of a bucket location (default: date_folders of the folder)."""
    if layout not in LAYOUTS:
        raise PublisherError(f"images layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    dated = (list_folders or (lambda: date_folders(images_dir)))() if layout != "daily" else []
    if layout == "flat" and dated:
        raise PublisherError(
            f"images_layout is flat, but {images_dir} holds date folders ({', '.join(dated[:3])}"
            f"{', ...' if len(dated) > 3 else ''}): a flat run would take every day's image of a product in path "
            "order, the oldest first, and publish it without its day. Set images_layout to auto or daily (each run "
            "takes its days; the day param picks one), or keep dated and undated images in separate folders"
        )
    if layout == "flat" or (layout == "auto" and not dated):
        return None
    if isinstance(start, datetime) or isinstance(end, datetime):
        raise TypeError("select_folders takes dates (from covered_days): a datetime's day depends on its time zone")
    if start is None:
        raise PublisherError("a date-partitioned images directory needs the run's days; or set images_layout to flat")
    return run_dates(start, end if end is not None else start)
