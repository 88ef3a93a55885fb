"""update_catalog reuses the last rewrite only when the catalog file, the URLs and the mode are the same and the
files it kept are intact (catalog_reuse.py); in every other case it rewrites, on local disk and on object storage."""

from __future__ import annotations

import json

import pytest

from include.catalog_publisher import catalog_reuse, publisher_tasks
from include.catalog_publisher.run_artifacts import RunArtifacts
from include.catalog_publisher.url_mapping import rewrite_digest
from tests.helpers import manifest_of_run, write_catalog

PRODUCTS = [{"product_id": f"P{i}", "name": f"product {i}"} for i in range(3)]
URLS = {f"P{i}": f"https://b.s3.amazonaws.com/p/P{i}.jpg" for i in range(3)}


@pytest.fixture(params=["local disk", "object storage"])
def artifacts(request, tmp_path, monkeypatch):
    """Where the runs keep their artifacts (and the rewrite record): data/, or a bucket through aws_default."""
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    if request.param == "object storage":
        bucket = request.getfixturevalue("bucket")
        monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", f"s3://{bucket}/runs")
        return request.getfixturevalue("s3"), bucket
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    return None, None


class Runs:
    """Runs of update_catalog, counting the real rewrites (rewrite_catalog, wrapped, not replaced)."""

    def __init__(self, tmp_path, monkeypatch):
        self.tmp_path, self.rewrites, self.count = tmp_path, 0, 0
        real = publisher_tasks.rewrite_catalog

        def counted(*args, **kwargs):
            self.rewrites += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(publisher_tasks, "rewrite_catalog", counted)

    def update(self, products=PRODUCTS, urls=URLS, day: str = "", bucket: str = ""):
        self.count += 1
        run = RunArtifacts("publish_product_images", f"run {self.count}")
        catalog = write_catalog(self.tmp_path / "inputs" / f"catalog-{self.count}.json", products)
        document = {"product_to_s3_url": urls, **({"product_image_dates": dict.fromkeys(urls, day)} if day else {})}
        run.url_mapping.parent.mkdir(parents=True, exist_ok=True)
        run.url_mapping.write_text(json.dumps(document))
        mapping = {"url_mapping": run.save(run.url_mapping), "urls_digest": rewrite_digest(document)}
        params = {"bucket": bucket, "prefix": "p", "public_base_url": ""}  # a dated run's images record: in bucket
        summary = publisher_tasks.update_catalog(run, str(catalog), mapping, manifest_of_run(run, day), params)
        return run, summary


@pytest.mark.fault(
    "the last catalog rewrite's record corrupt, or the catalog it kept replaced or pruned since",
    "the catalog is rewritten (a slower run); the last one is reused only for the same catalog, URLs and mode",
)
def test_the_last_rewrite_is_reused_only_for_the_same_inputs_and_intact_files(
    artifacts, request, tmp_path, monkeypatch
):
    (tmp_path / "inputs").mkdir()
    runs = Runs(tmp_path, monkeypatch)
    first, first_summary = runs.update()
    second, second_summary = runs.update()  # another run, the same catalog bytes and URLs: reused
    assert runs.rewrites == 1
    assert second.catalog.read_bytes() == first.catalog.read_bytes()
    assert second.catalog_ids.read_bytes() == first.catalog_ids.read_bytes()
    assert {k: v for k, v in second_summary.items() if k not in ("catalog", "catalog_ids", "reused")} == {
        k: v for k, v in first_summary.items() if k not in ("catalog", "catalog_ids", "reused")
    }
    assert (first_summary["reused"], second_summary["reused"]) == (False, True)
    assert second_summary["catalog"] == second.location(second.catalog)  # this run's own copy, kept for it

    second.catalog.write_text(second.catalog.read_text().replace("product 1", "tampered"))  # replaced since
    _replace_kept(artifacts, second, second.catalog)
    third, _ = runs.update()
    assert runs.rewrites == 2 and "tampered" not in third.catalog.read_text()

    _remove_kept(artifacts, third)  # pruned by retention
    fourth, _ = runs.update()
    assert runs.rewrites == 3 and json.loads(fourth.catalog.read_text())[1]["name"] == "product 1"

    _corrupt_record(artifacts, tmp_path, fourth)
    runs.update()
    assert runs.rewrites == 4

    runs.update()  # everything intact again: reused
    assert runs.rewrites == 4

    changed = [{**p, "name": "renamed"} if p["product_id"] == "P2" else p for p in PRODUCTS]
    renamed, _ = runs.update(products=changed)
    assert runs.rewrites == 5 and json.loads(renamed.catalog.read_text())[2]["name"] == "renamed"

    moved, _ = runs.update(products=changed, urls={**URLS, "P0": "https://cdn.example.com/P0.jpg"})
    assert (
        runs.rewrites == 6 and json.loads(moved.catalog.read_text())[0]["image_url"] == "https://cdn.example.com/P0.jpg"
    )

    cdn = {**URLS, "P0": "https://cdn.example.com/P0.jpg"}
    dated, _ = runs.update(products=changed, urls=cdn, day="2025-06-01", bucket=request.getfixturevalue("bucket"))
    assert runs.rewrites == 7 and json.loads(dated.catalog.read_text())[0]["image_date"] == "2025-06-01"
    runs.update(products=changed, urls=cdn, day="2025-06-01", bucket=request.getfixturevalue("bucket"))
    assert runs.rewrites == 7  # a dated run with the same catalog and images reuses it too


def _replace_kept(artifacts, run: RunArtifacts, local) -> None:
    """Put the changed local copy where the run kept it (on object storage, the object the record points to)."""
    s3, _ = artifacts
    if s3 is not None:
        run.save(local)


def _remove_kept(artifacts, run: RunArtifacts) -> None:
    s3, bucket = artifacts
    run.catalog.unlink()
    if s3 is not None:
        s3.delete_object(Bucket=bucket, Key=f"runs/{run.relative}/{run.catalog.name}")


def _corrupt_record(artifacts, tmp_path, run: RunArtifacts) -> None:
    """Garble the latest rewrite record where publish_latest keeps it (data/, or the bucket's latest/)."""
    s3, _ = artifacts
    if s3 is None:
        (tmp_path / catalog_reuse.RECORD).write_text("{not json")
        return
    garbled = run.dir / "garbled-record.json"
    garbled.write_text("{not json")
    run.publish_latest(garbled, catalog_reuse.RECORD)
