#!/usr/bin/env python
"""What the two catalog caches save at 1,000,000 products (part of make bench): catalog reuse (catalog_reuse.py:
update_catalog copies the last rewrite instead of rewriting an unchanged catalog) and the settled shortcut of the
published state (publish_changes does not compare again a catalog it found nothing to send for).

    .venv/bin/python bench/catalog_caches.py [--products 1000000] [--repeats 3]

On a fresh embedded stack (.stack/bench-caches/) and a generated catalog (bench/data/), in one process, the task
functions the DAG runs: update_catalog of a flat run with every product's URL, `--repeats` times with its last
rewrite's record (reused) alternating with `--repeats` times without it (rewritten); then, after a first publish of
the whole catalog to a fresh topic, publish_changes with nothing to send, `--repeats` times settled alternating with
`--repeats` times compared in full (the state's trust check and the topic's checks in both). A breakdown of two
tasks, not whole runs. The noise is the spread (slowest - fastest) of each measure's repeats; a cache earns its
place when its saving is above both spreads. Writes bench/results/catalog_caches.md and catalog_caches.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: data, results, the fresh stack)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stack, state, _ = bench.fresh_stack("bench-caches")
    results: dict = {"machine": f"{os.cpu_count()} cores", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-caches-") as home:  # the runs' artifacts: GBs at 1M products
            os.environ["CATALOG_PUBLISHER_HOME"] = home
            os.environ.pop("PUBLISHER_ARTIFACTS_URL", None)
            catalog = bench.make_catalog(bench.DATA / f"catalog-{args.products}.json", args.products)
            results["products"] = args.products
            results["catalog_reuse"], run = measure_reuse(catalog, args.products, args.repeats)
            results["settled"] = measure_settled(run, args.repeats)
    finally:
        stack.stop()
    bench.save_results("catalog_caches", results, render(results))
    return 0


def _mapping(count: int) -> Path:
    """A flat run's URL mapping giving every product of the generated catalog an image (cached)."""
    path = bench.DATA / f"mapping-{count}.json"
    if not path.exists():
        ids = [f"PROD-{n:07d}" for n in range(count)]
        document = {
            "bucket_name": "product-images",
            "total_images": count,
            "failed_images": 0,
            "product_to_s3_url": {pid: f"https://product-images.s3.amazonaws.com/products/{pid}.jpg" for pid in ids},
            "product_image_sha256": {pid: f"{n:064x}" for n, pid in enumerate(ids)},
            "failures": [],
        }
        path.write_text(json.dumps(document))
    return path


def measure_reuse(catalog: Path, count: int, repeats: int) -> tuple[dict, object]:
    """update_catalog's seconds with the record (reused) and without it (rewritten), alternating."""
    from include.catalog_publisher import catalog_reuse, publisher_tasks
    from include.catalog_publisher.run_artifacts import RunArtifacts, project_home
    from include.catalog_publisher.url_mapping import rewrite_digest

    mapping_file = _mapping(count)
    mapping = {"url_mapping": str(mapping_file), "urls_digest": rewrite_digest(json.loads(mapping_file.read_text()))}
    mapping["failed_images"] = 0
    timings: dict[str, list[float]] = {"reused_s": [], "rewritten_s": []}
    run = None
    for number in range(2 * repeats + 1):
        run = RunArtifacts("publish_product_images", f"bench-{uuid.uuid4().hex[:8]}")
        run.manifest.parent.mkdir(parents=True, exist_ok=True)
        header = {"images_dir": str(catalog.parent), "total_images": 0, "skipped_files": 0, "skipped": []}
        run.manifest.write_text(json.dumps({**header, "images": []}))  # a scan that skipped nothing
        manifest = {"manifest": str(run.manifest), "date_folders": ""}
        reusing = number % 2 == 1  # the first run writes the record; then rewritten, reused, rewritten, ...
        if not reusing:
            (project_home() / catalog_reuse.RECORD).unlink(missing_ok=True)
        started = time.monotonic()
        publisher_tasks.update_catalog(run, str(catalog), mapping, manifest)
        if number:
            timings["reused_s" if reusing else "rewritten_s"].append(time.monotonic() - started)
        print(f"update_catalog {'reused' if reusing else 'rewritten'}: {time.monotonic() - started:.2f}s", flush=True)
    return timings, run


def measure_settled(run, repeats: int) -> dict:
    """publish_changes with nothing to send: settled (its catalog digest given) and compared in full, alternating."""
    from include.catalog_publisher import env_clients
    from include.catalog_publisher.catalog import read_catalog_ids
    from include.catalog_publisher.catalog_changes import catalog_digest, catalog_messages, publish_changes

    topic = f"caches-{uuid.uuid4().hex[:6]}"  # created by the first publish, compacted, as the DAG creates it
    producer, where = env_clients.kafka_producer()
    ids = read_catalog_ids(run.catalog_ids)
    started = time.monotonic()
    digest = catalog_digest(run.catalog, run.catalog_ids)  # the state records the catalog it holds: settled
    outcome, state = publish_changes(
        producer, catalog_messages(run.catalog), topic, ids, None, where=where, catalog=digest
    )
    first = time.monotonic() - started
    print(f"first publish: {outcome.published} products, {first:.1f}s", flush=True)
    timings: dict[str, list[float]] = {"settled_s": [], "compared_s": []}
    for number in range(2 * repeats):
        settled = number % 2 == 0
        started = time.monotonic()
        digest = catalog_digest(run.catalog, run.catalog_ids) if settled else None  # publish_to_kafka hashes it
        outcome, state = publish_changes(
            producer, catalog_messages(run.catalog), topic, ids, state, where=where, catalog=digest
        )
        elapsed = time.monotonic() - started
        assert outcome.published == 0 and outcome.unchanged == len(ids), outcome
        timings["settled_s" if settled else "compared_s"].append(elapsed)
        print(f"publish_changes {'settled' if settled else 'compared'}: {elapsed:.2f}s", flush=True)
    producer.flush(10)
    return {"first_publish_s": first, **timings}


def _verdict(fast: list[float], slow: list[float]) -> tuple[float, float, str]:
    """(median saving, noise: the larger spread of the two measures, keep or remove)."""
    saving = statistics.median(slow) - statistics.median(fast)
    noise = max(max(fast) - min(fast), max(slow) - min(slow))
    return saving, noise, "keep" if saving > noise else "remove"


def render(r: dict) -> str:
    reuse, settled = r["catalog_reuse"], r["settled"]
    rows = [
        ("catalog reuse (update_catalog)", reuse["reused_s"], reuse["rewritten_s"]),
        ("settled shortcut (publish_changes, nothing to send)", settled["settled_s"], settled["compared_s"]),
    ]
    lines = [
        f"Catalog caches at {r['products']:,} products, {r['started']}, {r['machine']}, embedded stack: "
        f"`bench/catalog_caches.py` (medians of {len(reuse['reused_s'])}; a breakdown of two tasks in one process)",
        "",
        "| cache | with it | without it | saving | noise (largest spread) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for what, fast, slow in rows:
        saving, noise, verdict = _verdict(fast, slow)
        lines.append(
            f"| {what} | {statistics.median(fast):.2f}s | {statistics.median(slow):.2f}s | {saving:.2f}s | "
            f"{noise:.2f}s | {verdict} |"
        )
    lines += ["", f"First publish of the catalog to a fresh topic: {settled['first_publish_s']:.1f}s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
