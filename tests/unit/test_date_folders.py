"""Which date folders a run takes: the days it covers, dated in the DAG's time zone, as Airflow's own
timetable and backfill code hand them to the task. No services: the DAG file is parsed in-process."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pendulum
import pytest

from include.catalog_publisher.dag_defaults import dag_timezone, publisher_schedule
from include.catalog_publisher.date_folders import covered_days, date_folders, run_dates, select_folders
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import scan_images
from tests.helpers import write_image

BERLIN, NEW_YORK = pendulum.timezone("Europe/Berlin"), pendulum.timezone("America/New_York")
KIRITIMATI, PAGO_PAGO = pendulum.timezone("Pacific/Kiritimati"), pendulum.timezone("Pacific/Pago_Pago")  # +14, -11


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def days(day, start, end, run_after, tz) -> list[str]:
    return run_dates(*covered_days(day, start, end, run_after, tz))


NOW = utc(2026, 11, 25, 10)


@pytest.mark.parametrize(
    ("day", "start", "end", "run_after", "tz", "expected"),
    [
        # A scheduled daily run at 00:00 on D+1 covers [D, D+1): folder D, not the day just begun.
        (None, utc(2026, 11, 24), utc(2026, 11, 25), utc(2026, 11, 25), UTC, ["2026-11-24"]),
        # The same in Berlin: Airflow hands tasks UTC times; 23:00 UTC on the 23rd is the 24th there.
        (None, utc(2026, 11, 23, 23), utc(2026, 11, 24, 23), utc(2026, 11, 24, 23), BERLIN, ["2026-11-24"]),
        (None, utc(2026, 11, 23, 10), utc(2026, 11, 24, 10), utc(2026, 11, 24, 10), KIRITIMATI, ["2026-11-24"]),
        # A 23-hour day (New York's spring-forward) is still one day.
        (None, utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), utc(2026, 3, 9, 4), NEW_YORK, ["2026-03-08"]),
        # Wider and narrower schedules: a weekly interval, an hour, the last hour of a day.
        (None, utc(2025, 6, 1), utc(2025, 6, 4), NOW, UTC, ["2025-06-01", "2025-06-02", "2025-06-03"]),
        (None, utc(2025, 6, 1, 10), utc(2025, 6, 1, 11), NOW, UTC, ["2025-06-01"]),
        (None, utc(2025, 6, 1, 23), utc(2025, 6, 2), NOW, UTC, ["2025-06-01"]),
        # The day param wins over the interval.
        ("2025-06-02", utc(2026, 11, 24), utc(2026, 11, 25), NOW, BERLIN, ["2025-06-02"]),
        # No logical date (so no interval): the last complete day before the run's time, in the DAG's zone.
        (None, None, None, NOW, UTC, ["2026-11-24"]),
        (None, None, None, utc(2026, 11, 25, 5), PAGO_PAGO, ["2026-11-23"]),  # 18:00 on the 24th there
        (None, None, None, utc(2026, 11, 25, 12), KIRITIMATI, ["2026-11-25"]),  # 02:00 on the 26th there
        # A zero-length interval (schedule "none") means the same as no interval.
        (None, NOW, NOW, NOW, UTC, ["2026-11-24"]),
        (None, datetime(2026, 11, 25, 10), None, NOW, UTC, ["2026-11-24"]),  # naive: taken as UTC
    ],
    ids=[
        "daily-utc", "daily-berlin", "daily-kiritimati", "dst-day", "three-days", "an-hour", "last-hour",
        "day-param", "no-interval", "no-interval-pago-pago", "no-interval-kiritimati", "zero-length", "naive",
    ],
)  # fmt: skip
def test_covered_days(day, start, end, run_after, tz, expected):
    assert days(day, start, end, run_after, tz) == expected


def test_a_lookback_adds_the_days_before_the_run_s_own_but_never_to_a_day_param():
    daily = (utc(2026, 11, 23, 23), utc(2026, 11, 24, 23), utc(2026, 11, 24, 23), BERLIN)
    assert run_dates(*covered_days(None, *daily, lookback_days=2)) == ["2026-11-22", "2026-11-23", "2026-11-24"]
    assert run_dates(*covered_days(None, None, None, NOW, UTC, lookback_days=1)) == ["2026-11-23", "2026-11-24"]
    assert run_dates(*covered_days("2025-06-02", *daily, lookback_days=2)) == ["2025-06-02"]


@pytest.fixture(scope="module")
def publisher_dag():
    """The publisher as the scheduler sees it: the DAG file parsed, then serialized and deserialized."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(project_root() / "dags" / "publish_product_images.py"))
    assert bag.import_errors == {}
    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(bag.dags["publish_product_images"]))


def info_days(info, tz=UTC) -> list[str]:
    return days(None, info.data_interval.start, info.data_interval.end, info.run_after, tz)


def test_the_scheduled_run_at_midnight_publishes_the_day_that_ended(publisher_dag):
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = publisher_dag.timetable
    restriction = TimeRestriction(earliest=publisher_dag.start_date, latest=None, catchup=True)
    first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert (first.run_after, info_days(first)) == (utc(2025, 1, 2), ["2025-01-01"])
    previous = DataInterval(utc(2026, 11, 23), utc(2026, 11, 24))
    following = timetable.next_dagrun_info(last_automated_data_interval=previous, restriction=restriction)
    assert (following.run_after, info_days(following)) == (utc(2026, 11, 25), ["2026-11-24"])


def test_a_manual_run_publishes_the_last_complete_day_before_its_logical_date(publisher_dag):
    for logical_date in (utc(2026, 11, 25, 10), utc(2026, 11, 25)):  # the UI's "now", or exactly midnight
        interval = publisher_dag.timetable.infer_manual_data_interval(run_after=logical_date)
        assert days(None, interval.start, interval.end, logical_date, UTC) == ["2026-11-24"]


def test_backfill_from_a_to_b_makes_one_run_per_folder_a_to_b(publisher_dag):
    from airflow.models.backfill import _get_info_list

    infos = _get_info_list(from_date=utc(2025, 6, 1), to_date=utc(2025, 6, 3), reverse=False, dag=publisher_dag)
    assert [info_days(info) for info in infos] == [["2025-06-01"], ["2025-06-02"], ["2025-06-03"]]


def test_backfill_dates_are_read_in_the_default_timezone_so_it_must_match_the_dags():
    """`airflow backfill create` reads naive dates in [core] default_timezone (UTC unless set): with a Berlin
    DAG the first day is lost, unless the dates carry Berlin's offset (or default_timezone is Berlin)."""
    from airflow.models.backfill import _get_info_list
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    start = pendulum.datetime(2025, 1, 1, tz=BERLIN)
    sdk_dag = DAG("berlin", schedule=publisher_schedule("@daily", BERLIN), start_date=start)
    berlin_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(sdk_dag))

    def folders(start, end):
        infos = _get_info_list(from_date=start, to_date=end, reverse=False, dag=berlin_dag)
        return [day for info in infos for day in info_days(info, BERLIN)]

    assert folders(utc(2025, 6, 1), utc(2025, 6, 3)) == ["2025-06-02", "2025-06-03"]
    in_berlin = pendulum.datetime(2025, 6, 1, tz=BERLIN), pendulum.datetime(2025, 6, 3, tz=BERLIN)
    assert folders(*in_berlin) == ["2025-06-01", "2025-06-02", "2025-06-03"]


def test_the_schedule_setting():
    """$PUBLISHER_SCHEDULE: cron or preset -> a data-interval timetable in the DAG's zone; "none" -> manual only."""
    from airflow.sdk import CronDataIntervalTimetable

    assert publisher_schedule("none") is None and publisher_schedule(" None ") is None
    assert publisher_schedule("@once") == "@once"
    assert publisher_schedule("") == CronDataIntervalTimetable("0 0 * * *", timezone=dag_timezone())  # @daily
    assert publisher_schedule("30 2 * * *", BERLIN) == CronDataIntervalTimetable("30 2 * * *", timezone=BERLIN)
    with pytest.raises(PublisherError, match=r"PUBLISHER_SCHEDULE='every day' is not a cron expression or preset"):
        publisher_schedule("every day")
    assert dag_timezone("Europe/Berlin").name == "Europe/Berlin" and dag_timezone("").name == "UTC"
    with pytest.raises(PublisherError, match=r"PUBLISHER_TIMEZONE='Mars/Olympus' is not an IANA time zone name"):
        dag_timezone("Mars/Olympus")


def test_layouts(tmp_path):
    flat = tmp_path / "flat"
    write_image(flat / "PROD-1.jpg")
    daily = tmp_path / "daily"
    write_image(daily / "2025-06-01" / "PROD-1.jpg")
    write_image(daily / "2025-06-02" / "PROD-2.jpg")
    (daily / "not-a-date").mkdir()
    start, end = date(2025, 6, 2), date(2025, 6, 3)

    assert date_folders(daily) == ["2025-06-01", "2025-06-02"]
    assert select_folders(flat, "auto", start, end) is None
    assert select_folders(daily, "auto", start, end) == ["2025-06-02"]
    with pytest.raises(
        PublisherError, match=r"images_layout is flat, but .* holds date folders \(2025-06-01, 2025-06-02\)"
    ):
        select_folders(daily, "flat", start, end)  # it would publish PROD-1's oldest image, without its day
    assert select_folders(flat, "daily", start, end) == ["2025-06-02"]
    with pytest.raises(PublisherError, match="images layout must be one of auto, flat, daily"):
        select_folders(flat, "weekly", start, end)
    with pytest.raises(TypeError, match="takes dates"):  # a datetime's day would be UTC's, not the DAG's
        select_folders(daily, "auto", utc(2025, 6, 2), utc(2025, 6, 3))
    entries = [e for e in scan_images(daily, subdirs=["2025-06-02", "2025-06-09"]) if "skipped" not in e]
    assert [e["relative_path"] for e in entries] == ["2025-06-02/PROD-2.jpg"]
