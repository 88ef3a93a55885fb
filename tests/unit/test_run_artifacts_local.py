"""A run's artifacts on local disk (no PUBLISHER_ARTIFACTS_URL): kept where they are written, under the project home."""

from __future__ import annotations

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.run_artifacts import RunArtifacts, run_folder


def test_local_artifacts_are_kept_where_they_are_written(tmp_path, monkeypatch):
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    run = RunArtifacts("publish_product_images", "manual__2025-06-01T00:00:00+00:00")
    assert run.dir.parent == tmp_path / "data" / "runs" / "publish_product_images"
    assert run.dir.name.startswith("manual__2025-06-01T00_00_00_00_00-")
    run.manifest.parent.mkdir(parents=True)
    run.manifest.write_text("{}")
    assert run.save(run.manifest) == str(run.manifest)
    assert run.fetch(str(run.manifest)) == run.manifest
    assert run.fetch(str(run.unchanged), missing_ok=True) is None


@pytest.mark.fault(
    "a run triggered with the run id '.' or '..' (Airflow's run-id pattern accepts them), or two run ids that read "
    "alike once made safe for a path",
    "the first fails its first task at once naming the run id and what to do (no folder outside the run's own is "
    "written or pruned); the others keep folders of their own (a short hash of the raw id)",
)
def test_distinct_run_ids_never_share_a_folder_and_ids_that_name_none_are_refused():
    """Two ids that read alike once made safe keep folders of their own; `.` and `..` (which Airflow's run-id pattern
    accepts) would name the DAG's folder or the one above it, where retention would take DAG folders for runs."""
    alike = ["manual__2025-06-01T00:00:00+00:00", "manual__2025-06-01T00_00_00_00_00"]
    folders = [run_folder("publish_product_images", run_id) for run_id in alike]
    assert len(set(folders)) == 2 and all(f.count("/") == 1 for f in folders)
    assert run_folder("publish_product_images", alike[0]) == folders[0]  # the same id, the same folder
    longest = run_folder("publish_product_images", "manual__" + "x" * 242).split("/")[1]  # Airflow allows 250
    assert len(longest.encode()) <= 255
    for run_id in (".", "..", "", "::", "/"):
        with pytest.raises(PublisherError, match=rf"run id {run_id!r} cannot name a folder of its own"):
            RunArtifacts("publish_product_images", run_id)
