"""How a run's data interval selects date folders."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import scan_images
from include.catalog_publisher.partitions import date_folders, run_dates, select_folders
from tests.helpers import write_image

UTC = UTC


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 2, tzinfo=UTC), ["2025-06-01"]),  # a @daily run
        (datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 4, tzinfo=UTC), ["2025-06-01", "2025-06-02", "2025-06-03"]),
        (datetime(2025, 6, 1, 10, tzinfo=UTC), datetime(2025, 6, 1, 10, tzinfo=UTC), ["2025-06-01"]),  # a manual run's empty interval
        (datetime(2025, 6, 1, 6, tzinfo=UTC), datetime(2025, 6, 1, 18, tzinfo=UTC), ["2025-06-01"]),  # an hourly-ish interval inside one day
        (date(2025, 12, 31), None, ["2025-12-31"]),
    ],
)
def test_run_dates(start, end, days):
    assert run_dates(start, end) == days


def test_layouts(tmp_path):
    flat = tmp_path / "flat"
    write_image(flat / "PROD-1.jpg")
    daily = tmp_path / "daily"
    write_image(daily / "2025-06-01" / "PROD-1.jpg")
    write_image(daily / "2025-06-02" / "PROD-2.jpg")
    (daily / "not-a-date").mkdir()
    start, end = datetime(2025, 6, 2, tzinfo=UTC), datetime(2025, 6, 3, tzinfo=UTC)

    assert date_folders(daily) == ["2025-06-01", "2025-06-02"]
    assert select_folders(flat, "auto", start, end) is None
    assert select_folders(daily, "auto", start, end) == ["2025-06-02"]
    assert select_folders(daily, "flat", start, end) is None
    assert select_folders(flat, "daily", start, end) == ["2025-06-02"]
    with pytest.raises(PublisherError, match="images layout must be one of auto, flat, daily"):
        select_folders(flat, "weekly", start, end)
    entries = [e for e in scan_images(daily, subdirs=["2025-06-02", "2025-06-09"]) if "skipped" not in e]
    assert [e["relative_path"] for e in entries] == ["2025-06-02/PROD-2.jpg"]
