"""The run report's reading of a run, without a browser: a publish run whose artifacts are on object
storage (as with $PUBLISHER_ARTIFACTS_URL on workers that share no disk), a run whose XCom points
outside its own folder, and artifacts that cannot be read."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from devstack import local_airflow
from include.catalog_publisher import run_report
from include.catalog_publisher.defaults import project_home
from include.catalog_publisher.run_artifacts import RunArtifacts, run_folder
from tests.helpers import write_catalog, write_image
from tests.ui.support import ImageChangedAfterManifest

PUBLISHER, INDEXER, REBUILD = "publish_product_images", "index_product_catalog", "rebuild_product_index"


def test_the_report_reads_a_run_whose_artifacts_are_on_object_storage(airflow_db, bucket, topic, tmp_path, monkeypatch):
    artifacts = f"s3://{bucket}/runs"
    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", artifacts)
    images = tmp_path / "images"
    for n in range(1, 7):
        write_image(images / f"PROD-{n}.png", "PNG", seed=n, side=64 * n)
    (images / "PROD-9.jpg").write_text("a text file with an image's name")
    catalog = [{"product_id": f"PROD-{n}", "name": f"Product {n}"} for n in range(1, 6)]
    write_catalog(tmp_path / "products.json", [*catalog, {"product_id": "PROD-X", "name": "X"}])
    conf = {
        "images_dir": str(images),
        "catalog_file": str(tmp_path / "products.json"),
        "bucket": bucket,
        "topic": topic,
        "batch_size": 2,
        "max_failed_percent": 50,
    }
    work = project_home() / "data" / "work" / PUBLISHER  # where the in-process tasks keep their copies
    change = ImageChangedAfterManifest(work, images / "PROD-3.png")
    change.start()
    run = local_airflow.run_dag(PUBLISHER, conf)
    assert change.wait(), "the image was not changed after the manifest"
    assert run.succeeded, run.task_states
    # The report must read the bucket: the worker's local copies go.
    shutil.rmtree(work / run_folder(PUBLISHER, run.run_id).split("/")[-1])

    from airflow.utils.session import create_session

    with create_session() as session:
        facts = run_report.load_run(session, PUBLISHER, run.run_id)
    report = run_report.publish_report(facts)

    assert report.problems == []
    assert (report.images_found, report.uploaded, report.unchanged, report.failed) == (6, 5, 0, 1)
    assert [(f["product_id"], f["reason"].split(": ")[-1]) for f in report.failures] == [
        ("PROD-3", "file changed since the manifest was built; rebuild the manifest")
    ]
    skipped = [(s["file_path"].split("/")[-1], s["reason"]) for s in report.skipped_examples]
    assert skipped == [("PROD-9.jpg", "not an image (unrecognised file signature)")]
    assert [(b.batch, b.images, b.uploaded, b.failed, b.state) for b in report.batches] == [
        (0, 2, 2, 0, "success"),
        (1, 2, 1, 1, "success"),
        (2, 2, 2, 0, "success"),
    ]
    # PROD-3's upload failed: held at its live version (none yet), not published without its image.
    assert report.without_image == ["PROD-X"] and report.without_product == ["PROD-6"]
    assert (report.catalog["held"], report.catalog["held_examples"]) == (1, ["PROD-3"])
    assert report.kafka["indexer_behind"] > 0  # nothing indexed the topic: the run announced
    assert report.kafka == {
        "topic": topic,
        "published": 5,
        "removed": 0,
        "unchanged": 0,
        "older_than_live": 0,
        "seconds": report.kafka["seconds"],
        "dry_run": False,
        "read_back": "no saved state",  # the topic's first publish
        "indexer_behind": report.kafka["indexer_behind"],
    }
    prefix = f"{artifacts}/{run_folder(PUBLISHER, run.run_id)}/"
    assert [a.location.startswith(prefix) for a in report.artifacts] == [True] * len(report.artifacts)
    assert {a.name for a in report.artifacts} >= {"Manifest", "URL mapping", "Catalog with S3 URLs", "Batch 1: results"}

    html = run_report.render(report)
    assert "file changed since the manifest was built" in html and "PROD-X" in html
    assert html.count('<rect class="bar') == 3 and html.count('<rect class="bar failed"') == 1
    assert not any(word in html for word in ("<script", "src=", "href=", "url(")), "the page fetches or runs nothing"


def test_the_report_reads_nothing_outside_the_run_folder(tmp_path, monkeypatch):
    """XCom names where a run's artifacts are; a location outside the run's folder is not opened."""
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    secret = tmp_path / "elsewhere" / "secret.json"
    secret.parent.mkdir()
    secret_results = [{"status": "failed", "product_id": "SECRET"}]
    secret.write_text(json.dumps({"skipped": [{"file_path": "SECRET", "reason": "SECRET"}], "results": secret_results}))
    run_id = "manual__2026-01-01T00:00:00+00:00"
    inside = RunArtifacts(PUBLISHER, run_id)
    escape = str(inside.dir / ".." / ".." / ".." / "elsewhere" / "secret.json")
    facts = run_report.RunFacts(PUBLISHER, run_id, "success", "manual", None, None, {})
    facts.xcoms[("build_manifest", -1)] = {"manifest": escape, "images": 1, "bytes": 1, "skipped_files": 1}
    facts.xcoms[("plan_batches", -1)] = [{"batch": 0, "path": str(secret), "images": 1, "bytes": 1}]
    facts.xcoms[("upload_batch", 0)] = {"batch": 0, "results": str(secret), "uploaded": 0, "failed": 1, "bytes": 0}

    report = run_report.publish_report(facts)

    assert report.skipped_examples == [] and report.failures == []
    assert "SECRET" not in run_report.render(report)
    assert len([p for p in report.problems if "outside this run's artifact folder" in p]) == 2, report.problems

    # A run made before run folders carried a hash left its artifacts in <dag>/<run id made safe>: still its own.
    legacy = inside.dir.parent / "manual__2026-01-01T00_00_00_00_00" / "results" / "batch-00000.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"results": [{"status": "failed", "product_id": "P1", "error": "timed out"}]}))
    assert run_report.ArtifactReader(inside).own(str(legacy))
    assert not run_report.ArtifactReader(RunArtifacts(PUBLISHER, "manual__other")).own(str(legacy))

    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", "s3://artifacts/runs")
    reader = run_report.ArtifactReader(RunArtifacts(PUBLISHER, run_id))
    for elsewhere in (
        "s3://artifacts/runs/index_product_catalog/x/s3_url_mapping.json",
        "s3://other/runs/x.json",
        str(Path(secret)),
    ):
        assert reader.open(elsewhere, "URL mapping") is None
    assert len(reader.problems) == 3
    assert reader.own(f"s3://artifacts/runs/{PUBLISHER}/manual__2026-01-01T00_00_00_00_00/s3_url_mapping.json")


def test_an_artifact_that_cannot_be_read_is_named_on_the_report(tmp_path, monkeypatch):
    """A results file cut short (a full disk, say) or gone: the report says which, and shows the rest."""
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    run_id = "manual__2026-01-02T00:00:00+00:00"
    run = RunArtifacts(PUBLISHER, run_id)
    run.results(0).parent.mkdir(parents=True)
    run.results(0).write_text('{"results": [{"status": "failed", "product_id": "PROD-1", "err')
    facts = run_report.RunFacts(PUBLISHER, run_id, "success", "manual", None, None, {})
    batch = str(run.dir / "batches" / "b0.json")
    facts.xcoms[("build_manifest", -1)] = {"manifest": str(run.manifest), "images": 2, "bytes": 9, "skipped_files": 1}
    facts.xcoms[("plan_batches", -1)] = [{"batch": 0, "path": batch, "images": 2, "bytes": 9}]
    results = str(run.results(0))
    facts.xcoms[("upload_batch", 0)] = {"batch": 0, "results": results, "uploaded": 1, "failed": 1, "bytes": 4}

    report = run_report.publish_report(facts)
    html = run_report.render(report)

    assert report.images_found == 2 and [b.uploaded for b in report.batches] == [1]
    assert [p.split(":")[0] for p in report.problems] == ["manifest", "results of batch 0"], report.problems
    assert "does not exist" in report.problems[0] and "cannot read" in report.problems[1]
    assert "Could not read everything" in html and "results of batch 0" in html


def test_a_run_still_running_has_a_report_that_reloads(tmp_path, monkeypatch):
    """Mid-run, tasks have no return value yet: the page shows what there is and reloads itself."""
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path))
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    now = datetime.now(UTC)
    publish = run_report.RunFacts(PUBLISHER, "manual__1", "running", "manual", now, None, {})
    run = RunArtifacts(PUBLISHER, "manual__1")
    manifest = {"manifest": str(run.manifest), "images": 4, "bytes": 4000, "skipped_files": 0}
    publish.xcoms[("build_manifest", -1)] = manifest
    batches = [{"batch": n, "path": str(run.dir / f"b{n}"), "images": 2, "bytes": 2000} for n in (0, 1)]
    publish.xcoms[("plan_batches", -1)] = batches
    done = {"batch": 0, "results": str(run.results(0)), "uploaded": 2, "failed": 0, "bytes": 2000}
    publish.xcoms[("upload_batch", 0)] = done
    publish.tasks.append(run_report.TaskFacts("upload_batch", "Upload batch", 0, "success", "batch 0", now, now, 1))
    publish.tasks.append(run_report.TaskFacts("upload_batch", "Upload batch", 1, "running", "batch 1", now, None, 1))
    index = run_report.RunFacts(INDEXER, "manual__2", "running", "manual", now, None, {"topic": "products"})
    label = "products: consumer 0 of 1"
    index.tasks.append(run_report.TaskFacts("index_partitions", "Index partitions", 0, "running", label, now, None, 1))

    rebuild = run_report.RunFacts(REBUILD, "manual__3", "running", "manual", now, None, {})  # its plan not yet made
    rebuild.tasks.append(run_report.TaskFacts("plan", "Plan", -1, "running", None, now, None, 1))

    pages = [run_report.render(run_report.publish_report(publish)), run_report.render(run_report.index_report(index))]
    pages.append(run_report.render(run_report.rebuild_report(rebuild)))

    for html in pages:
        assert '<meta http-equiv="refresh" content="10">' in html and "this page reloads every 10 s" in html
    assert 'class="state running">running</span>' in pages[0] and "products: consumer 0 of 1" in pages[1]
    assert "products.dlq" in pages[1]
    assert "Rebuild of <code>–</code>" in pages[2] and "The alias was not moved." in pages[2]
