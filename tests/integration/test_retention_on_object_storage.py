"""Retention applied by build_manifest to runs on object storage (SeaweedFS), and to the worker-local work folders."""

from __future__ import annotations

import time

import pytest

from include.catalog_publisher import publisher_tasks
from include.catalog_publisher.run_artifacts import RunArtifacts, run_folder
from tests.helpers import PUBLISHER_DAG as DAG
from tests.helpers import old_run, retention_home


@pytest.fixture
def home(tmp_path, monkeypatch):
    return retention_home(tmp_path, monkeypatch)


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
    current = run_folder(DAG, "run d").split("/")[1]
    assert runs == {"run_c", current, "latest"}  # the current run's; run_a and run_b are gone, every object
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
