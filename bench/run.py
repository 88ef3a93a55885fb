#!/usr/bin/env python
"""`make bench`: the pipeline side by side with the tools users would pick instead, in one run.

On a fresh embedded stack (.stack/bench/) and generated data (bench/data/), measures the steps beside the
tools users would pick instead (uploads against s5cmd and the S3 server's ceiling: bench/uploads.py; daily
runs against `aws s3 sync` and `s5cmd sync`: bench/changes.py):
  rewrite      the catalog rewrite of 1,000,000 products: throughput and peak RSS
  kafka        publish_products vs a bare confluent-kafka producer loop (same messages, same settings)
  index        index_messages from Kafka vs elasticsearch.helpers.streaming_bulk (same documents)
  end-to-end   both DAGs for the upload set, and the share of wall time that is orchestration
  scaling      upload phase time and peak RSS of the publisher run at each size
Writes bench/results/components.md, components.json and chart.png, and prints the table; bench/results/results.md
gathers the tables of every part of `make bench`.

  python bench/run.py [--images 10000] [--scales 1000,10000] [--catalog 1000000] [--messages 100000]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstack import local_airflow  # noqa: E402
from devstack.embedded_stack import EmbeddedStack, isolate_from_caller  # noqa: E402

DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results"
AWS = ROOT / ".venv-aws" / "bin" / "aws"
S5CMD = Path(sys.executable).with_name("s5cmd")


# -- data -------------------------------------------------------------------------------------------


def make_images(folder: Path, count: int, seed: int = 1, kb: tuple[int, int] = (20, 200)) -> Path:
    """count real JPEGs of kb[0]-kb[1] KB (default 20-200): a few hundred Pillow-encoded bases, each copy made
    unique by bytes after the end-of-image marker (decoders ignore them; S3 sees distinct objects)."""
    marker = folder / f".complete-{count}"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    import io

    from PIL import Image

    rng = random.Random(seed)
    bases = []
    for _ in range(200):
        side = rng.randint(60, 90) if kb[1] <= 40 else rng.randint(90, 300)  # small bases for small images
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=92)
        bases.append(out.getvalue())
    for n in range(count):
        base = bases[n % len(bases)]
        target = rng.randint(*kb) * 1024
        trailer = max(16, target - len(base))
        (folder / f"PROD-{n:07d}.jpg").write_bytes(base + rng.randbytes(trailer))
    marker.touch()
    return folder


def make_catalog(path: Path, count: int) -> Path:
    """A JSON array of count products with the usual fields (cached: regenerated only when count changes)."""
    counted = path.with_suffix(".count")
    if path.exists() and counted.exists() and counted.read_text() == str(count):
        return path
    rng = random.Random(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write("[")
        for n in range(count):
            pid = f"PROD-{n:07d}"
            product = {
                "product_id": pid,
                "name": f"Product {n}",
                "description": "A sample product for the benchmark, with a description of ordinary length.",
                "category": rng.choice(["shoes", "bags", "home", "toys"]),
                "price": round(rng.uniform(1, 500), 2),
                "stock": rng.randint(0, 999),
                "tags": ["bench", "sample"],
                "image_url": f"data/images/{pid}.jpg",
            }
            out.write(("\n  " if n == 0 else ",\n  ") + json.dumps(product))
        out.write("\n]\n")
    path.with_suffix(".count").write_text(str(count))
    return path


# -- measuring ----------------------------------------------------------------------------------------


def child(*args: str, env: dict | None = None) -> tuple[dict, float, int]:
    """Run `bench/run.py child ...` in a fresh process: (its JSON answer, wall seconds, its peak RSS in bytes).

    The peak is the child's own VmHWM, read by the child at its end: rusage's ru_maxrss would
    include what the child inherited from this process at fork.
    """
    log = RESULTS / "bench.log"
    started = time.monotonic()
    with open(log, "ab") as err:
        done = subprocess.run(
            [sys.executable, __file__, "child", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    if done.returncode:
        raise SystemExit(f"benchmark step {args[0]} failed (code {done.returncode}); see {log}")
    answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return answer, time.monotonic() - started, answer.pop("peak_rss")


def own_peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed_cli(argv: list[str], env: dict) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:3])} failed: {done.stderr[-2000:]}")
    return time.monotonic() - started


# -- the child side: one measured step per process ---------------------------------------------------


def child_main(argv: list[str]) -> None:
    answer = measure(argv)
    print(json.dumps({**answer, "peak_rss": own_peak_rss()}))


def _measure_dag_run(argv: list[str]) -> dict:
    local_airflow.configure(ROOT / ".airflow" / "bench", {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
    conf = json.loads(argv[1])
    dag_id = "publish_product_images" if argv[0] == "publish" else "index_product_catalog"
    run = local_airflow.run_dag(dag_id, conf)
    if not run.succeeded:
        raise SystemExit(f"{dag_id} failed: {run.task_states}")
    return {
        "durations": run.durations,
        "busy_s": run.busy_s,
        "wall_s": run.wall_s,
        "run_s": run.run_s,
        "xcoms": run.xcoms,
    }


def _measure_rewrite(argv: list[str]) -> dict:
    from include.catalog_publisher.catalog import rewrite_catalog
    from include.catalog_publisher.url_mapping import load_url_mapping

    started = time.monotonic()
    summary = rewrite_catalog(argv[1], load_url_mapping(argv[2]), argv[3])
    return {"seconds": time.monotonic() - started, "products": summary.products, "updated": summary.updated}


def _measure_kafka_ours(argv: list[str]) -> dict:
    from include.catalog_publisher import env_clients
    from include.catalog_publisher.catalog import read_products
    from include.catalog_publisher.kafka_publish import publish_products

    producer, _ = env_clients.kafka_producer()
    products = list(read_products(argv[1]))
    producer.list_topics(argv[2], timeout=15)  # both producers start connected (the bare one likewise)
    started = time.monotonic()
    outcome = publish_products(producer, products, argv[2])
    return {"seconds": time.monotonic() - started, "messages": outcome.delivered}


def _measure_kafka_bare(argv: list[str]) -> dict:
    from confluent_kafka import Producer

    from include.catalog_publisher.catalog import read_products
    from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS

    producer = Producer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], **PRODUCER_SETTINGS})
    products = list(read_products(argv[1]))
    producer.list_topics(argv[2], timeout=15)
    started = time.monotonic()  # like publish_products, the clock includes encoding each message
    messages = ((p["product_id"].encode(), json.dumps(p, ensure_ascii=False).encode()) for p in products)
    for key, value in messages:
        while True:
            try:
                producer.produce(argv[2], key=key, value=value)
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    assert producer.flush(120) == 0
    return {"seconds": time.monotonic() - started, "messages": len(products)}


def _measure_index_ours(argv: list[str]) -> dict:
    from include.catalog_publisher import env_clients
    from include.catalog_publisher.indexer import DeadLetters, index_messages

    es = env_clients.elasticsearch()
    consumer, _ = env_clients.kafka_consumer(f"bench-{uuid.uuid4().hex[:6]}")
    producer, _ = env_clients.kafka_producer()
    started = time.monotonic()
    outcome = index_messages(
        consumer, es, argv[1], argv[2], DeadLetters(producer, argv[1] + ".dlq"), batch_size=1000, progress_every=60
    )
    seconds = time.monotonic() - started
    consumer.close()
    return {"seconds": seconds, "indexed": outcome.indexed}


def _measure_index_bulk(argv: list[str]) -> dict:
    from elasticsearch.helpers import streaming_bulk

    from include.catalog_publisher import env_clients
    from include.catalog_publisher.catalog import read_products
    from include.catalog_publisher.indexer import ensure_index

    es = env_clients.elasticsearch()
    ensure_index(es, argv[2])
    docs = list(read_products(argv[1]))
    started = time.monotonic()
    ok = sum(
        1
        for success, _ in streaming_bulk(
            es, ({"_index": argv[2], "_id": d["product_id"], "_source": d} for d in docs), chunk_size=1000
        )
        if success
    )
    es.indices.refresh(index=argv[2])
    return {"seconds": time.monotonic() - started, "indexed": ok}


MEASURES = {
    "publish": _measure_dag_run,
    "index": _measure_dag_run,
    "rewrite": _measure_rewrite,
    "kafka-ours": _measure_kafka_ours,
    "kafka-bare": _measure_kafka_bare,
    "index-ours": _measure_index_ours,
    "index-bulk": _measure_index_bulk,
}


def measure(argv: list[str]) -> dict:
    """One step in this child process, by name: argv[0] is the step, the rest its arguments."""
    if argv[0] not in MEASURES:
        raise SystemExit(f"unknown step {argv[0]}")
    return MEASURES[argv[0]](argv)


# -- the parent side ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--scales", default="1000,10000,100000")
    parser.add_argument("--catalog", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    results: dict = {"machine": f"{os.cpu_count()} cores", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    stack, state, env = fresh_stack("bench")
    try:
        run_all(args, results, state, env)
    finally:
        stack.stop()
    save_results("components", results, render(results))
    chart(results)
    return 0


# The parts of make bench, in the order results.md shows them.
PARTS = (
    "scheduled_runs",
    "uploads",
    "changes",
    "scale",
    "components",
    "catalog_caches",
    "bucket_copies",
    "index_rebuild",
)


def span(items: list[dict]) -> float:
    """Seconds from the first start to the last end of Airflow runs or task instances (REST answers; 0 for none)."""
    if not items:
        return 0.0
    first, last = bounds(items)
    return last - first


def bounds(items: list[dict]) -> tuple[float, float]:
    """The first start and the last end (epoch seconds) of Airflow runs or task instances (REST answers)."""
    from datetime import datetime

    starts = [datetime.fromisoformat(i["start_date"]).timestamp() for i in items]
    ends = [datetime.fromisoformat(i["end_date"]).timestamp() for i in items]
    return min(starts), max(ends)


def save_results(name: str, results: dict, table: str) -> None:
    """bench/results/<name>.json (every number) and <name>.md (the table), the table printed, and results.md
    gathered again from every part's latest table."""
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
    tables = [(RESULTS / f"{part}.md").read_text() for part in PARTS if (RESULTS / f"{part}.md").exists()]
    heading = f"# make bench: the latest table of each part (bench/{', '.join(PARTS)})\n\n"
    (RESULTS / "results.md").write_text(heading + "\n".join(tables))


def fresh_stack(name: str):
    """(stack, its state, the peers' environment): a fresh embedded stack in .stack/<name>, out of reach of the
    caller's AWS_*/KAFKA_*/... settings, with Airflow configured for the DAG runs and the peers' tools checked."""
    if not AWS.exists():
        raise SystemExit(f"{AWS} is missing; run `make bench`, which installs the AWS CLI in its own environment")
    RESULTS.mkdir(parents=True, exist_ok=True)
    isolate_from_caller()  # the caller's AWS_*/KAFKA_*/... settings must not reach the stack or the peers
    os.environ["PUBLISHER_ALLOWED_INPUTS"] = str(DATA)  # the DAG reads the generated images and catalogs
    os.environ["PUBLISHER_ALLOWED_OUTPUTS"] = "s3://*,kafka://*,elasticsearch://*"  # and writes the bench's own
    stack = EmbeddedStack(ROOT / ".stack" / name)
    stack.stop()
    shutil.rmtree(stack.dir, ignore_errors=True)
    state = stack.start()
    atexit.register(_discard_data, stack)
    env = {**os.environ, **state.env(), "AWS_MAX_ATTEMPTS": "3"}
    os.environ.update(state.env())
    local_airflow.configure(ROOT / ".airflow" / "bench")
    local_airflow.migrate()
    return stack, state, env


def _discard_data(stack: EmbeddedStack) -> None:
    """At the bench's exit, once it has stopped its stack: what the services stored (the 100,000-image runs leave
    tens of GB), keeping their logs."""
    stack.stop()
    for path in stack.dir.iterdir():
        if path.is_dir() and path != stack.logs:
            shutil.rmtree(path, ignore_errors=True)


def s3_env(env):
    return {**env, "AWS_REGION": env["AWS_DEFAULT_REGION"]}


def publish_conf(images: Path, catalog: Path, bucket: str, prefix: str, topic: str, force: bool = False) -> str:
    return json.dumps(
        {
            "images_dir": str(images),
            "catalog_file": str(catalog),
            "bucket": bucket,
            "prefix": prefix,
            "topic": topic,
            "upload_concurrency": 64,
            "force_reupload": force,
        }
    )


def make_topic(bootstrap: str, name: str, partitions: int = 3) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in (name, name + ".dlq")]
    )
    for future in futures.values():
        future.result(15)
    return name


def run_all(args, results: dict, state, env) -> None:
    bucket = state.bucket
    count = args.images
    images = make_images(DATA / f"images-{count}", count)
    nbytes = sum(p.stat().st_size for p in images.glob("*.jpg"))
    catalog = make_catalog(DATA / f"catalog-{count}.json", count)
    results["upload_set"] = {"images": count, "mb": round(nbytes / 1e6, 1)}
    print(f"upload set: {count} images, {nbytes / 1e6:.0f} MB", file=sys.stderr)

    # 1. a first publish of the upload set, then the index DAG on what it published
    topic = make_topic(state.kafka_bootstrap, f"bench-{uuid.uuid4().hex[:6]}")
    ours, _, ours_rss = child("publish", publish_conf(images, catalog, bucket, "dag", topic))
    upload_s = ours["durations"]["upload_batch"]
    indexed, _, _ = child(
        "index",
        json.dumps(
            {
                "topic": topic,
                "index": "bench-e2e",
                "group_id": "bench-e2e",
                "catalog_file": ours["xcoms"]["update_catalog"]["catalog"],
            }
        ),
    )

    # 3. end to end: both DAGs (first publish + index), and what share of it is not the tasks' own work
    wall = ours["wall_s"] + indexed["wall_s"]
    busy = ours["busy_s"] + indexed["busy_s"]
    results["end_to_end"] = {
        "wall_s": wall,
        "task_s": busy,
        "overhead_share": 1 - busy / wall,
        "publisher_peak_rss_mb": ours_rss / 1e6,
    }

    # 4. catalog rewrite of N products
    big = make_catalog(DATA / f"catalog-{args.catalog}.json", args.catalog)
    mapping = DATA / f"mapping-{args.catalog}.json"
    if not mapping.exists():  # written line by line: this process stays small while its children are measured
        with open(mapping, "w") as out:
            out.write(
                f'{{"bucket_name": "{bucket}", "uploaded_images": {args.catalog}, '
                f'"failed_images": 0, "product_to_s3_url": {{'
            )
            out.write(
                ",".join(
                    f'"PROD-{n:07d}": "https://{bucket}.s3.amazonaws.com/products/PROD-{n:07d}.jpg"'
                    for n in range(args.catalog)
                )
            )
            out.write("}}\n")
    rewrite, _, rss = child("rewrite", str(big), str(mapping), str(DATA / "rewritten.json"))
    results["rewrite"] = {
        "products": rewrite["products"],
        "seconds": rewrite["seconds"],
        "products_per_s": rewrite["products"] / rewrite["seconds"],
        "peak_rss_mb": rss / 1e6,
    }

    # 5. Kafka publish and 6. indexing, on the same messages / documents
    messages = make_catalog(DATA / f"catalog-{args.messages}.json", args.messages)
    t_ours = make_topic(state.kafka_bootstrap, f"k-ours-{uuid.uuid4().hex[:6]}")
    t_bare = make_topic(state.kafka_bootstrap, f"k-bare-{uuid.uuid4().hex[:6]}")
    k_ours, _, _ = child("kafka-ours", str(messages), t_ours, env=env)
    k_bare, _, _ = child("kafka-bare", str(messages), t_bare, env=env)
    results["kafka"] = {"messages": args.messages, "ours_s": k_ours["seconds"], "bare_s": k_bare["seconds"]}
    i_ours, _, _ = child("index-ours", t_ours, "bench-ours", env=env)
    i_bulk, _, _ = child("index-bulk", str(messages), "bench-bulk", env=env)
    results["index"] = {
        "documents": args.messages,
        "ours_s": i_ours["seconds"],
        "bulk_s": i_bulk["seconds"],
        "indexed": i_ours["indexed"],
    }

    # 7. scaling: the publisher's upload phase and peak RSS at each size (fresh prefix each)
    results["scaling"] = []
    for scale in [int(s) for s in args.scales.split(",") if s]:
        if scale == count:
            results["scaling"].append({"images": scale, "upload_s": upload_s, "peak_rss_mb": ours_rss / 1e6})
            continue
        folder = make_images(DATA / f"images-{scale}", scale)
        cat = make_catalog(DATA / f"catalog-{scale}.json", scale)
        # A topic of its own: on the upload set's topic, this smaller catalog would be read as removals.
        scale_topic = make_topic(state.kafka_bootstrap, f"bench-scale-{scale}-{uuid.uuid4().hex[:6]}")
        run, _, rss = child("publish", publish_conf(folder, cat, bucket, f"scale-{scale}", scale_topic))
        results["scaling"].append(
            {"images": scale, "upload_s": run["durations"]["upload_batch"], "peak_rss_mb": rss / 1e6}
        )


def render(r: dict) -> str:
    e2e, rw, k, ix = r["end_to_end"], r["rewrite"], r["kafka"], r["index"]
    rows = [
        (
            f"catalog rewrite, {rw['products']:,} products",
            f"{rw['products_per_s']:,.0f} products/s, {rw['seconds']:.1f}s",
            f"{rw['peak_rss_mb']:.0f} MB peak RSS",
            "<= 300 MB",
        ),
        (
            f"Kafka publish, {k['messages']:,} messages",
            f"{k['messages'] / k['ours_s']:,.0f}/s vs bare {k['messages'] / k['bare_s']:,.0f}/s",
            f"{k['bare_s'] / k['ours_s']:.2f}x",
            ">= 0.8x",
        ),
        (
            f"indexing, {ix['documents']:,} documents",
            f"{ix['documents'] / ix['ours_s']:,.0f}/s vs streaming_bulk {ix['documents'] / ix['bulk_s']:,.0f}/s",
            f"{ix['bulk_s'] / ix['ours_s']:.2f}x",
            ">= 0.8x",
        ),
        (
            f"end to end, both DAGs, {r['upload_set']['images']:,} images",
            f"{e2e['wall_s']:.1f}s wall, {e2e['task_s']:.1f}s in tasks",
            f"{e2e['overhead_share'] * 100:.0f}% orchestration",
            "<= 25%",
        ),
    ]
    lines = [
        f"Steps, {r['started']}, this machine ({r['machine']}), embedded stack, one run: `bench/run.py`",
        "",
        "| measure | measured | ratio | target |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "| images | upload phase (dag.test) | peak RSS of the publisher run |",
        "|---|---|---|",
        *[f"| {s['images']:,} | {s['upload_s']:.1f}s | {s['peak_rss_mb']:.0f} MB |" for s in r["scaling"]],
        "",
    ]
    return "\n".join(lines)


def chart(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, ix = r["kafka"], r["index"]
    names = ["Kafka / bare producer", "index / streaming_bulk"]
    ratios = [k["bare_s"] / k["ours_s"], ix["bulk_s"] / ix["ours_s"]]
    targets = [0.8, 0.8]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, ratios, color=["#2a9d8f" if v >= t else "#e76f51" for v, t in zip(ratios, targets, strict=True)])
    left.scatter(names, targets, marker="_", s=900, color="black", label="target")
    left.set_ylabel("speed relative to the alternative (higher is better)")
    left.legend()
    scales = r["scaling"]
    right.plot([s["images"] for s in scales], [s["upload_s"] for s in scales], marker="o", label="upload phase (s)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("images")
    right.set_ylabel("seconds")
    twin = right.twinx()
    twin.plot(
        [s["images"] for s in scales],
        [s["peak_rss_mb"] for s in scales],
        marker="s",
        color="#e76f51",
        label="peak RSS (MB)",
    )
    twin.set_ylabel("MB")
    right.set_title("how cost grows")
    fig.tight_layout()
    fig.savefig(RESULTS / "chart.png", dpi=110)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        sys.exit(main())
