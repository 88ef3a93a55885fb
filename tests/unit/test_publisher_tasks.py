"""The DAG's task bodies where they decide something themselves: the failure threshold."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.catalog_publisher import publisher_tasks
from include.catalog_publisher.run_artifacts import RunArtifacts


def results_file(tmp_path, failed: int, total: int):
    results = [
        {"product_id": f"P{i}", "file_path": f"P{i}.jpg", "key": f"p/P{i}.jpg", "bytes": 1, "status": "failed" if i < failed else "uploaded", "error": "boom"}
        for i in range(total)
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": results}))
    return [{"results": str(path)}]


def test_the_run_fails_only_above_the_tolerated_failure_share_and_keeps_the_mapping(stack, tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    run = RunArtifacts("publish_product_images", "threshold")
    batches = results_file(tmp_path, failed=1, total=20)  # 5% failed

    summary = publisher_tasks.merge_url_mapping(run, batches, "product-images", "p", "", max_failed_percent=5)
    assert (summary["uploaded_images"], summary["failed_images"]) == (19, 1)

    with pytest.raises(AirflowFailException, match=r"1 of 20 images failed \(5.0% > max_failed_percent 4\)"):
        publisher_tasks.merge_url_mapping(run, batches, "product-images", "p", "", max_failed_percent=4)
    mapping = json.loads(run.url_mapping.read_text())  # written before failing, with the reasons
    assert mapping["failures"] == [{"product_id": "P0", "file_path": "P0.jpg", "reason": "boom"}]
