"""Where one DAG run keeps its artifacts, so concurrent runs and backfills never share a file."""

from __future__ import annotations

import re
from pathlib import Path

from catalog_publisher.files import publish_copy
from catalog_publisher.settings import project_home, resolve

RUNS_DIR = "data/runs"


class RunArtifacts:
    """Paths of one run's manifest, batches, results, mapping and catalog under data/runs/<dag>/<run>/."""

    def __init__(self, dag_id: str, run_id: str, root: str | Path = RUNS_DIR) -> None:
        safe_run = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)
        self.dir = resolve(root) / dag_id / safe_run

    @property
    def manifest(self) -> Path:
        return self.dir / "s3_upload_manifest.json"

    @property
    def batches_dir(self) -> Path:
        return self.dir / "batches"

    @property
    def unchanged(self) -> Path:
        """Skipped results of the images the bucket already holds unchanged (written when planning)."""
        return self.dir / "results" / "unchanged.json"

    def results(self, batch: int) -> Path:
        return self.dir / "results" / f"batch-{batch:05d}.json"

    @property
    def url_mapping(self) -> Path:
        return self.dir / "s3_url_mapping.json"

    @property
    def catalog(self) -> Path:
        return self.dir / "products_with_s3_urls.json"


def publish_latest(run_file: Path, reference_path: str) -> Path:
    """Copy a run's artifact to its runbook path under data/ (atomically), for people and scripts."""
    target = project_home() / reference_path
    publish_copy(run_file, target)
    return target
