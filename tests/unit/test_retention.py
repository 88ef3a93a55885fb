"""Retention of run folders, applied by the DAG itself (build_manifest): on local disk and on SeaweedFS.

Here local disk and the policy; SeaweedFS in tests/integration/test_retention_on_object_storage.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from include.catalog_publisher import publisher_tasks, retention
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.run_artifacts import RunArtifacts, run_folder
from tests.helpers import PUBLISHER_DAG as DAG
from tests.helpers import old_run, retention_home


@pytest.fixture
def home(tmp_path, monkeypatch):
    return retention_home(tmp_path, monkeypatch)


def test_build_manifest_removes_local_runs_older_than_the_retention_days(home):
    runs = home / "data" / "runs" / DAG
    old_run(runs, "scheduled__2025-01-01", days_ago=45)
    old_run(runs, "scheduled__2025-02-01", days_ago=31)
    old_run(runs, "scheduled__2025-02-20", days_ago=12)
    old_run(runs, "manual__still_going", days_ago=0.1)

    manifest = publisher_tasks.build_manifest(RunArtifacts(DAG, "manual__now"), "data/images", "flat", None, None)

    assert manifest["images"] == 1
    current = run_folder(DAG, "manual__now").split("/")[1]
    assert sorted(p.name for p in runs.iterdir()) == sorted([current, "manual__still_going", "scheduled__2025-02-20"])


def test_a_runs_limit_keeps_the_newest_runs_and_never_the_current_one_or_a_run_within_the_grace(home, monkeypatch):
    runs = home / "data" / "runs" / DAG
    for i, days in enumerate([9, 8, 7, 3]):
        old_run(runs, f"r{i}", days_ago=days)
    old_run(runs, "active", days_ago=0.5)  # modified 12 h ago: within the 24 h grace, may still be running
    monkeypatch.setenv("PUBLISHER_RETENTION_RUNS", "2")

    publisher_tasks.build_manifest(RunArtifacts(DAG, "current"), "data/images", "flat", None, None)

    # Kept: the current run and "active" (the 2 newest), and "active" would be kept by the grace anyway.
    assert sorted(p.name for p in runs.iterdir()) == sorted(["active", run_folder(DAG, "current").split("/")[1]])


def test_the_policy_decides_by_age_count_grace_and_the_current_run():
    now = datetime(2025, 6, 30, tzinfo=UTC)
    ages = {"a": timedelta(days=40), "b": timedelta(days=20), "c": timedelta(hours=2), "current": timedelta(days=90)}
    modified = {name: now - age for name, age in ages.items()}
    assert retention.Retention(days=30).expired(modified, "current", now) == ["a"]
    assert retention.Retention(days=None, runs=2).expired(modified, "current", now) == ["b", "a"]
    assert retention.Retention(days=None, runs=1).expired(modified, "current", now) == ["b", "a"]  # c: within the grace
    assert retention.Retention(days=None, runs=None).expired(modified, "current", now) == []


@pytest.mark.fault(
    "a retention setting that is not a number (PUBLISHER_RETENTION_DAYS=a month)",
    "build_manifest fails at once naming the setting",
)
def test_a_retention_setting_that_is_not_a_number_is_named(home, monkeypatch):
    monkeypatch.setenv("PUBLISHER_RETENTION_DAYS", "a month")
    expected = "PUBLISHER_RETENTION_DAYS='a month' is not a number of at least 0 or 'none'"
    with pytest.raises(PublisherError, match=expected):
        publisher_tasks.build_manifest(RunArtifacts(DAG, "r"), "data/images", "flat", None, None)
    monkeypatch.setenv("PUBLISHER_RETENTION_DAYS", "none")
    monkeypatch.setenv("PUBLISHER_RETENTION_RUNS", "0")
    with pytest.raises(PublisherError, match="PUBLISHER_RETENTION_RUNS='0' is not a whole number of at least 1"):
        retention.Retention.from_env()
