"""Retention of run folders, applied by the DAG itself (build_manifest): on local disk and on SeaweedFS."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from include.catalog_publisher import publisher_tasks, retention
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.run_artifacts import RunArtifacts
from tests.helpers import write_image

DAG = "publish_product_images"


def old_run(root, name: str, days_ago: float) -> None:
    """A run folder with a manifest and a batch file, all last written `days_ago` days ago."""
    folder = root / name
    (folder / "batches").mkdir(parents=True)
    (folder / "s3_upload_manifest.json").write_text("{}")
    (folder / "batches" / "batch-00000.json").write_text("{}")
    when = time.time() - days_ago * 86400
    written = [folder / "batches" / "batch-00000.json", folder / "s3_upload_manifest.json", folder / "batches", folder]
    for path in written:
        os.utime(path, (when, when))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    for name in ("PUBLISHER_RETENTION_DAYS", "PUBLISHER_RETENTION_RUNS", "PUBLISHER_RETENTION_GRACE_HOURS"):
        monkeypatch.delenv(name, raising=False)
    write_image(tmp_path / "data" / "images" / "PROD-1.jpg")
    return tmp_path


def test_build_manifest_removes_local_runs_older_than_the_retention_days(home):
    runs = home / "data" / "runs" / DAG
    old_run(runs, "scheduled__2025-01-01", days_ago=45)
    old_run(runs, "scheduled__2025-02-01", days_ago=31)
    old_run(runs, "scheduled__2025-02-20", days_ago=12)
    old_run(runs, "manual__still_going", days_ago=0.1)

    manifest = publisher_tasks.build_manifest(RunArtifacts(DAG, "manual__now"), "data/images", "flat", None, None)

    assert manifest["images"] == 1
    assert sorted(p.name for p in runs.iterdir()) == ["manual__now", "manual__still_going", "scheduled__2025-02-20"]


def test_a_runs_limit_keeps_the_newest_runs_and_never_the_current_one_or_a_run_within_the_grace(home, monkeypatch):
    runs = home / "data" / "runs" / DAG
    for i, days in enumerate([9, 8, 7, 3]):
        old_run(runs, f"r{i}", days_ago=days)
    old_run(runs, "active", days_ago=0.5)  # modified 12 h ago: within the 24 h grace, may still be running
    monkeypatch.setenv("PUBLISHER_RETENTION_RUNS", "2")

    publisher_tasks.build_manifest(RunArtifacts(DAG, "current"), "data/images", "flat", None, None)

    # Kept: the current run and "active" (the 2 newest), and "active" would be kept by the grace anyway.
    assert sorted(p.name for p in runs.iterdir()) == ["active", "current"]


def test_the_worker_local_work_folders_follow_the_same_retention_with_object_storage(stack, bucket, home, monkeypatch):
    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", f"s3://{bucket}/runs")
    work = home / "data" / "work" / DAG
    old_run(work, "scheduled__2025-01-01", days_ago=40)
    old_run(work, "scheduled__2025-03-01", days_ago=2)
    run = RunArtifacts(DAG, "manual__now")
    assert publisher_tasks.retention.prune_work(run) == 1
    assert sorted(p.name for p in work.iterdir()) == ["scheduled__2025-03-01"]


def test_object_storage_runs_are_pruned_and_latest_is_kept(stack, s3, bucket, home, monkeypatch):
    """On SeaweedFS every object is written now, so the runs limit (with no grace) decides here."""
    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", f"s3://{bucket}/runs")
    monkeypatch.setenv("PUBLISHER_RETENTION_RUNS", "2")
    monkeypatch.setenv("PUBLISHER_RETENTION_GRACE_HOURS", "0")
    for run_name in ("run_a", "run_b", "run_c"):
        for name in ("s3_upload_manifest.json", "batches/batch-00000.json", "results/batch-00000.json"):
            s3.put_object(Bucket=bucket, Key=f"runs/{DAG}/{run_name}/{name}", Body=b"{}")
        time.sleep(1.1)  # LastModified has one-second resolution: the runs are ordered run_a < run_b < run_c
    s3.put_object(Bucket=bucket, Key=f"runs/{DAG}/latest/s3_url_mapping.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="runs/another_dag/run_a/s3_upload_manifest.json", Body=b"{}")

    publisher_tasks.build_manifest(RunArtifacts(DAG, "run d"), "data/images", "flat", None, None)

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    runs = {key.split("/")[2] for key in keys if key.startswith(f"runs/{DAG}/")}
    assert runs == {"run_c", "run_d", "latest"}  # run_d is the current run; run_a and run_b are gone, every object
    assert len([k for k in keys if k.startswith(f"runs/{DAG}/run_c/")]) == 3
    assert f"runs/{DAG}/latest/s3_url_mapping.json" in keys
    assert "runs/another_dag/run_a/s3_upload_manifest.json" in keys  # another DAG's runs are its own business


def test_retention_by_days_on_object_storage_spares_what_was_written_recently(stack, s3, bucket, home, monkeypatch):
    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", f"s3://{bucket}/runs")
    monkeypatch.setenv("PUBLISHER_RETENTION_DAYS", "1")
    s3.put_object(Bucket=bucket, Key=f"runs/{DAG}/yesterday_run/s3_upload_manifest.json", Body=b"{}")
    publisher_tasks.build_manifest(RunArtifacts(DAG, "today"), "data/images", "flat", None, None)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert f"runs/{DAG}/yesterday_run/s3_upload_manifest.json" in keys  # written seconds ago


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
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("PUBLISHER_RETENTION_DAYS", "a month")
    expected = "PUBLISHER_RETENTION_DAYS='a month' is not a number of at least 0 or 'none'"
    with pytest.raises(AirflowFailException, match=expected):
        publisher_tasks.build_manifest(RunArtifacts(DAG, "r"), "data/images", "flat", None, None)
    monkeypatch.setenv("PUBLISHER_RETENTION_DAYS", "none")
    monkeypatch.setenv("PUBLISHER_RETENTION_RUNS", "0")
    with pytest.raises(PublisherError, match="PUBLISHER_RETENTION_RUNS='0' is not a whole number of at least 1"):
        retention.Retention.from_env()
