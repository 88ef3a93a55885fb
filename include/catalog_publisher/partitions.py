"""How a DAG run selects its images: date folders, so backfills re-upload exactly their dates.

An images directory is *daily* when it holds folders named YYYY-MM-DD (images/2025-06-01/...):
a run then takes the folders of the days in its data interval [start, end) — for a @daily
schedule, its logical date's folder; a zero-length interval (a manual run) takes the day of its
start. A *flat* directory is taken whole by every run. `auto` (the default) decides by looking
for date folders. Modification times are deliberately not used: copies, restores and rsync
change them, while a folder name states what the operator meant.
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, timedelta
from pathlib import Path

from include.catalog_publisher.errors import PublisherError

DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
LAYOUTS = ("auto", "flat", "daily")


def date_folders(images_dir: str | os.PathLike) -> list[str]:
    """The YYYY-MM-DD folders directly inside images_dir (real directories, not links), sorted."""
    root = Path(images_dir)
    if not root.is_dir():
        return []
    return sorted(e.name for e in os.scandir(root) if DATE_FOLDER.match(e.name) and e.is_dir(follow_symlinks=False))


def run_dates(start: datetime | date, end: datetime | date | None) -> list[str]:
    """The days (YYYY-MM-DD) of the interval [start, end), or start's day when the interval is empty."""
    first = start.date() if isinstance(start, datetime) else start
    last = (end.date() if isinstance(end, datetime) else end) if end is not None else first
    if isinstance(end, datetime) and end.time() != datetime.min.time():
        last += timedelta(days=1)  # an interval ending mid-day still covers that day
    days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days)]
    return days or [first.isoformat()]


def select_folders(images_dir: str | os.PathLike, layout: str, start: datetime | None, end: datetime | None) -> list[str] | None:
    """None to take the whole directory, else the date folders (existing or not) this run covers."""
    if layout not in LAYOUTS:
        raise PublisherError(f"images layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    daily = layout == "daily" or (layout == "auto" and bool(date_folders(images_dir)))
    if not daily:
        return None
    if start is None:
        raise PublisherError("a date-partitioned images directory needs a run with a logical date; trigger the run with one, or set images_layout to flat")
    return run_dates(start, end)
