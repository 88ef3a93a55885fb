"""A run's artifacts on local disk (no PUBLISHER_ARTIFACTS_URL): kept where they are written, under the project home."""

from __future__ import annotations

from include.catalog_publisher.run_artifacts import RunArtifacts


def test_local_artifacts_are_kept_where_they_are_written(tmp_path, monkeypatch):
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    run = RunArtifacts("publish_product_images", "manual__2025-06-01T00:00:00+00:00")
    assert run.dir == tmp_path / "data" / "runs" / "publish_product_images" / "manual__2025-06-01T00_00_00_00_00"
    run.manifest.parent.mkdir(parents=True)
    run.manifest.write_text("{}")
    assert run.save(run.manifest) == str(run.manifest)
    assert run.fetch(str(run.manifest)) == run.manifest
    assert run.fetch(str(run.unchanged), missing_ok=True) is None
