#!/usr/bin/env python
"""Index rebuild (part of make bench): rebuild_product_index under a real scheduler against
`elasticsearch.helpers.streaming_bulk` of the same messages into a fresh index, and what a search through the alias
sees during the swap.

    .venv/bin/python bench/index_rebuild.py [--products 100000] [--repeats 2]

On a fresh embedded stack (.stack/bench-rebuild/): --products products are published to a topic and indexed once
into the alias `products` by the live indexer (untimed; its group is the rebuild's live group). Then `--repeats`
rounds, the order turning each round:
  streaming_bulk   a consumer reads the topic from its start to its end and `streaming_bulk` (chunks of 1,000)
                   indexes every message into a fresh index, then a refresh: the whole job, in this process
  rebuild          a rebuild_product_index run under LocalExecutor (api-server, scheduler, dag-processor; each
                   task its own process), triggered through the REST API: Airflow's run duration, and each task's
                   (plan, fill, verify, swap) as a breakdown
During every job a poller counts and searches through the alias (0.1 s between two): during the rebuilds its
errors, the smallest count it saw, and the time between two answers, over the whole run and during swap_alias.
Writes bench/results/index_rebuild.md and index_rebuild.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: data, the stack, results)

from devstack.airflow_services import Airflow, migrate, service_env  # noqa: E402
from devstack.embedded_stack import free_port  # noqa: E402

DAG_ID = "rebuild_product_index"
ALIAS = "products"
GROUP = "catalog-indexer"
BATCH = 1000  # documents per bulk request, both jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    stack, state, _ = bench.fresh_stack("bench-rebuild")
    deployment = None
    try:
        catalog = bench.make_catalog(bench.DATA / f"catalog-{args.products}.json", args.products)
        topic = bench.make_topic(state.kafka_bootstrap, f"rebuild-{uuid.uuid4().hex[:6]}")
        products = _publish_and_index(catalog, topic)
        deployment = _deployment()
        conf = {"index": ALIAS, "topic": topic, "group_id": GROUP, "catalog_file": str(catalog), "batch_size": BATCH}
        runs: dict[str, list[dict]] = {"streaming_bulk": [], "rebuild": []}
        for round_ in range(args.repeats):
            jobs = [("streaming_bulk", lambda: _anchor(topic)), ("rebuild", lambda: _rebuild(deployment, conf))]
            for name, job in jobs[round_ % 2 :] + jobs[: round_ % 2]:
                print(f"round {round_ + 1}: {name}", file=sys.stderr)
                runs[name].append(job())
    finally:
        if deployment:
            deployment.stop()
        stack.stop()
    results = summarize({"products": products, "runs": runs, "measured": datetime.now().isoformat(timespec="seconds")})
    bench.save_results("index_rebuild", results, render(results))
    return 0


def _publish_and_index(catalog: Path, topic: str) -> int:
    """The topic and the live index the rebuild starts from (untimed)."""
    from include.catalog_publisher import env_clients
    from include.catalog_publisher.catalog import read_products
    from include.catalog_publisher.indexer import DeadLetters, index_messages
    from include.catalog_publisher.kafka_publish import publish_products

    producer, _ = env_clients.kafka_producer()
    published = publish_products(producer, read_products(catalog), topic).delivered
    consumer, _ = env_clients.kafka_consumer(GROUP)
    es = env_clients.elasticsearch()
    try:
        index_messages(consumer, es, topic, ALIAS, DeadLetters(producer, topic + ".dlq"), batch_size=1000)
    finally:
        consumer.close()
        es.close()
    return published


def _deployment() -> Airflow:
    """The project's DAGs under LocalExecutor, with the scheduled publisher switched off."""
    home = ROOT / ".airflow" / "bench-rebuild"
    port = free_port()
    env = service_env(
        home / "airflow",
        port,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        CATALOG_PUBLISHER_HOME=str(home / "publisher"),
        PUBLISHER_SCHEDULE="none",
    )
    migrate(env)
    airflow = Airflow(home / "airflow", env, port)
    airflow.start()
    airflow.wait_for(lambda: airflow.get(f"/api/v2/dags/{DAG_ID}")["dag_id"], DAG_ID)
    return airflow


def _streaming_bulk(topic: str) -> dict:
    """The anchor: the topic's messages, read from its start, indexed by streaming_bulk into a fresh index."""
    from elasticsearch.helpers import streaming_bulk

    from include.catalog_publisher import env_clients
    from include.catalog_publisher.index_versions import INDEX_MAPPING

    es = env_clients.elasticsearch()
    index = f"anchor-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, mappings=INDEX_MAPPING)
    started = time.monotonic()
    actions = ({"_index": index, "_id": key, "_source": value} for key, value in _messages(topic))
    indexed = sum(1 for ok, _ in streaming_bulk(es, actions, chunk_size=BATCH) if ok)
    es.indices.refresh(index=index)
    seconds = time.monotonic() - started
    es.indices.delete(index=index)
    es.close()
    return {"seconds": seconds, "indexed": indexed}


def _anchor(topic: str) -> dict:
    """streaming_bulk with the poller searching beside it, as during a rebuild."""
    result, poller = searched(lambda: _streaming_bulk(topic))
    return {**result, "searches": len(poller.answers), "error_count": len(poller.errors)}


def _messages(topic: str):
    """(key, document) of every message of the topic, from its start to the end it has now."""
    from confluent_kafka import Consumer, KafkaError

    from include.catalog_publisher import env_clients

    consumer = Consumer(
        {
            "bootstrap.servers": env_clients.kafka_bootstrap(None),
            "group.id": f"anchor-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    partitions, ended = None, set()
    try:
        while partitions is None or ended < partitions:
            for message in consumer.consume(1000, timeout=1.0):
                if message.error() and message.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition())
                elif message.error() is None and message.value() is not None:
                    yield message.key().decode(), json.loads(message.value())
            if consumer.assignment():
                partitions = {p.partition for p in consumer.assignment()}
    finally:
        consumer.close()


class Poller(threading.Thread):
    """A shop's search through the alias, during both jobs alike (the same load on the engine): each answer's wall
    time and count, and every error. A pause between two searches keeps it a shop's load, not a flood."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop, self.answers, self.errors = threading.Event(), [], []

    def run(self) -> None:
        from include.catalog_publisher import env_clients

        es = env_clients.elasticsearch()
        while not self.stop.wait(0.1):
            try:
                count = es.count(index=ALIAS)["count"]
                es.search(index=ALIAS, query={"match": {"name": "product"}}, size=1)
                self.answers.append((time.time(), count))
            except Exception as exc:  # noqa: BLE001 - every error is a finding
                self.errors.append(repr(exc)[:200])
        es.close()


def searched(job):
    """Run `job` with the poller searching beside it: (the job's result, the poller)."""
    poller = Poller()
    poller.start()
    try:
        return job(), poller
    finally:
        poller.stop.set()
        poller.join(30)


def _rebuild(airflow: Airflow, conf: dict) -> dict:
    """One rebuild_product_index run under the scheduler; the poller's answers around the swap."""
    (run, run_id), poller = searched(lambda: _rebuild_run(airflow, conf))
    tasks = {t["task_id"]: t for t in airflow.task_instances(DAG_ID, run_id)}
    swap = tasks["swap_alias"]
    during = (_wall(swap["start_date"]), _wall(swap["end_date"]))
    return {
        "run_s": _seconds(run["start_date"], run["end_date"]),
        "tasks_s": {name: _seconds(t["start_date"], t["end_date"]) for name, t in tasks.items() if t["end_date"]},
        "swap": airflow.xcom(DAG_ID, run_id, "swap_alias"),
        "searches": len(poller.answers),
        "search_errors": poller.errors[:5],
        "error_count": len(poller.errors),
        "smallest_count": min((c for _, c in poller.answers), default=None),
        "median_gap_s": _gaps(poller.answers, None)[0],
        "longest_gap_s": _gaps(poller.answers, None)[1],
        "swap_searches": sum(1 for t, _ in poller.answers if during[0] <= t <= during[1]),
        "longest_gap_in_swap_s": _gaps(poller.answers, during)[1],
    }


def _rebuild_run(airflow: Airflow, conf: dict) -> tuple[dict, str]:
    status, body = airflow.trigger(DAG_ID, conf)
    if status != 200:
        raise SystemExit(f"trigger refused ({status}): {body}")
    run = airflow.finished(DAG_ID, body["dag_run_id"])
    if run["state"] != "success":
        raise SystemExit(f"rebuild run {run['state']}; logs in {airflow.home}")
    return run, body["dag_run_id"]


def _gaps(answers: list, window: tuple[float, float] | None) -> tuple[float | None, float | None]:
    """(median, longest) time between two answers, over all of them or those touching `window` (wall times)."""
    times = [t for t, _ in answers]
    gaps = [(a, b) for a, b in zip(times, times[1:], strict=False)]
    if window:
        gaps = [(a, b) for a, b in gaps if b >= window[0] and a <= window[1]]
    lengths = [b - a for a, b in gaps]
    return (statistics.median(lengths) if lengths else None, max(lengths, default=None))


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def summarize(r: dict) -> dict:
    anchor = statistics.median(run["seconds"] for run in r["runs"]["streaming_bulk"])
    ours = statistics.median(run["run_s"] for run in r["runs"]["rebuild"])
    r["anchor_s"], r["rebuild_s"], r["throughput_ratio"] = anchor, ours, anchor / ours
    r["cold_rebuild_s"] = r["runs"]["rebuild"][0]["run_s"]
    r["search_errors"] = sum(run["error_count"] for run in r["runs"]["rebuild"])
    r["smallest_count"] = min(run["smallest_count"] for run in r["runs"]["rebuild"])
    r["longest_gap_s"] = max(run["longest_gap_s"] for run in r["runs"]["rebuild"])
    r["median_gap_s"] = statistics.median(run["median_gap_s"] for run in r["runs"]["rebuild"])
    r["longest_gap_in_swap_s"] = max(run["longest_gap_in_swap_s"] or 0.0 for run in r["runs"]["rebuild"])
    r["swap_searches"] = sum(run["swap_searches"] for run in r["runs"]["rebuild"])
    return r


def render(r: dict) -> str:
    n = r["products"]
    tasks = r["runs"]["rebuild"][-1]["tasks_s"]
    breakdown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in tasks.items())
    return "\n".join(
        [
            f"## Index rebuild: {n:,} documents (measured {r['measured']})",
            "",
            "| job | seconds | documents/s | vs streaming_bulk |",
            "|---|---|---|---|",
            f"| `streaming_bulk` from the topic into a fresh index (median) | {r['anchor_s']:.1f} | "
            f"{n / r['anchor_s']:,.0f} | 1.00x |",
            f"| rebuild_product_index under LocalExecutor, Airflow's run duration (median) | {r['rebuild_s']:.1f} | "
            f"{n / r['rebuild_s']:,.0f} | {r['throughput_ratio']:.2f}x (target >= 0.8x) |",
            f"| the same, first run of the deployment | {r['cold_rebuild_s']:.1f} | "
            f"{n / r['cold_rebuild_s']:,.0f} | {r['anchor_s'] / r['cold_rebuild_s']:.2f}x |",
            "",
            f"Breakdown of the last rebuild, per task (each its own process): {breakdown}.",
            "",
            f"Searches through the alias (count, then a match query; 0.1 s apart) during the rebuilds: "
            f"{sum(x['searches'] for x in r['runs']['rebuild']):,}, {r['search_errors']} errors, smallest count "
            f"{r['smallest_count']:,} of {n:,}. During the swap_alias tasks: {r['swap_searches']} answers, the "
            f"longest time between two {r['longest_gap_in_swap_s'] * 1000:.0f} ms (over the whole rebuilds: median "
            f"{r['median_gap_s'] * 1000:.0f} ms, longest {r['longest_gap_s'] * 1000:.0f} ms). The search-visible "
            "gap during the swap (target: none) is an error or a smaller count; a slow answer is the engine's load.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
