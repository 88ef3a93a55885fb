#!/usr/bin/env python
"""`make demo`: both DAGs end to end on the embedded stack, then a summary.

Makes sample data in data/ if there is none, starts a fresh embedded stack (SeaweedFS, Tansu,
osmem) in .stack/, runs publish_product_images and then index_product_catalog with dag.test() on
Airflow's SQLite metadata in .airflow/, prints what happened and stops the stack. \
The artifacts stay in data/, the objects and
messages in .stack/ (`make stack-start` brings them back). Every demo starts from an empty stack,
so a second demo ends in the same state as the first.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: include/ and devstack/ import from it

from devstack import local_airflow, sample_data
from devstack.embedded_stack import EmbeddedStack, StackError, default_state_dir, isolate_from_caller  # noqa: E402
from include.catalog_publisher import defaults  # noqa: E402


def summary_lines(run: local_airflow.DagRunResult, stack_state) -> list[str]:
    shards = run.xcoms.get("build_manifest", [])  # one summary per manifest shard, added up
    manifest = {key: sum(part.get(key, 0) for part in shards) for key in ("images", "bytes", "skipped_files")}
    mapping = run.xcoms.get("merge_url_mapping", {})
    catalog = run.xcoms.get("update_catalog", {})
    published = run.xcoms.get("publish_to_kafka", {})
    batches = run.xcoms.get("upload_batch", [])
    upload_s = run.durations.get("upload_batch", 0.0)
    uploaded_bytes = mapping.get("uploaded_bytes", 0)
    rate = (
        f"{mapping.get('uploaded_images', 0) / upload_s:.0f} images/s, {uploaded_bytes / upload_s / 1e6:.1f} MB/s"
        if upload_s
        else "n/a"
    )
    return [
        f"publish_product_images run {run.run_id}: {run.state}",
        f"  images found         {manifest.get('images', 0)} ({manifest.get('bytes', 0) / 1e6:.1f} MB), "
        f"files skipped: {manifest.get('skipped_files', 0)}",
        f"  upload               {len(batches)} mapped batches, {mapping.get('uploaded_images', 0)} uploaded, "
        f"{mapping.get('skipped_images', 0)} skipped as unchanged, {mapping.get('failed_images', 0)} failed, "
        f"{uploaded_bytes / 1e6:.1f} MB in {upload_s:.1f}s ({rate})",
        f"  catalog              {catalog.get('products', 0)} products, "
        f"{catalog.get('updated', 0)} with S3 image_url, "
        f"{catalog.get('products_without_image', 0)} without image, "
        f"{catalog.get('images_without_product', 0)} images without product",
        f"  kafka                {published.get('published', 0)} products confirmed "
        f"on topic '{published.get('topic', '?')}' at {stack_state.kafka_bootstrap}",
        f"  bucket               s3://{stack_state.bucket} "
        "(the stack stops now; `make stack-start` brings it back to look around)",
        f"  artifacts            {defaults.MANIFEST_FILE}, {defaults.URL_MAPPING_FILE}, "
        f"{defaults.UPDATED_CATALOG_FILE}",
    ]


def index_summary_lines(run: local_airflow.DagRunResult, stack_state) -> list[str]:
    indexed = run.xcoms.get("indexing_totals", {})
    verified = run.xcoms.get("verify_index", {})
    lines = [
        f"index_product_catalog run {run.run_id}: {run.state}",
        f"  indexing             {indexed.get('indexed', 0)} documents indexed "
        f"from {indexed.get('consumed', 0)} messages, "
        f"{indexed.get('dead_lettered', 0)} dead-lettered, in {indexed.get('elapsed_s', 0):.1f}s",
        f"  verified             {verified.get('verified', 0)} catalog products searchable with their S3 image_url; "
        f"index '{verified.get('index', '?')}' holds {verified.get('index_documents', 0)} documents",
    ]
    if run.succeeded:
        lines.append(f"  sample search        {sample_hit(stack_state.elasticsearch_url, verified['index'])}")
    return lines


def sample_hit(url: str, index: str) -> str:
    """One real full-text search against the index, shown as the product and its image URL."""
    from elasticsearch import Elasticsearch

    es = Elasticsearch(url)
    hits = es.search(index=index, query={"match": {"name": "jacket"}}, size=1)["hits"]
    if not hits["hits"]:
        return "no product matches 'jacket'"
    top = hits["hits"][0]["_source"]
    return (
        f"name:jacket -> {hits['total']['value']} hits, "
        f"first: {top['product_id']} '{top['name']}' {top.get('image_url')}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="products to generate when data/ has none (default 300)")
    parser.add_argument(
        "--batch-size", type=int, default=50, help="images per mapped upload task (default 50, to show several batches)"
    )
    args = parser.parse_args()
    ignored = isolate_from_caller()
    if ignored:
        print(f"demo: ignoring {', '.join(ignored)} from your shell; the demo runs on its own embedded stack")
    home = defaults.project_home()

    if (home / defaults.CATALOG_FILE).exists():
        print(f"sample data: keeping {defaults.CATALOG_FILE} and {defaults.IMAGES_DIR}/")
    else:
        made = sample_data.generate(home / "data", args.count)
        print(f"sample data: {made.products} products, {made.images} images written to data/")

    stack = EmbeddedStack(default_state_dir())
    stack.stop()  # one started by `make stack-start`, before its state goes
    shutil.rmtree(stack.dir, ignore_errors=True)  # a fresh stack: the demo's outcome is the same every time
    try:
        state = stack.start()
        print(
            f"embedded stack: S3 {state.s3_endpoint}, Kafka {state.kafka_bootstrap}, "
            f"Elasticsearch API {state.elasticsearch_url}"
        )
        local_airflow.configure(home / ".airflow", {**state.env(), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
        # FastAPI's test client (which dag.test() runs the execution API through) warns about httpx on import.
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        local_airflow.migrate()
        logging.basicConfig(level=logging.WARNING)
        run = local_airflow.run_dag("publish_product_images", {"batch_size": args.batch_size})
        print()
        print("\n".join(summary_lines(run, state)))
        if not run.succeeded:
            return 1
        indexed = local_airflow.run_dag("index_product_catalog")
        print("\n".join(index_summary_lines(indexed, state)))
        return 0 if indexed.succeeded else 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
