"""Indexing throughput: 1 consumer against 3 consumers of one group on a 3-partition topic.

    .venv/bin/python bench/indexer_consumers.py [--products 30000] [--repeats 2]

Starts its own embedded stack (Tansu, osmem behind the media-type proxy), publishes N small products
to a fresh 3-partition topic, then indexes the topic alternately with 1 and with 3 consumer processes
(each a fresh group into a fresh index, so both read every message), each consumer running the DAG
task's code (`index_messages`, batches of 500). A run's time is from starting the consumers to the
last one returning, group joins and the final refresh included. The CPU seconds each service and the
consumers used during the run say what bounds it on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _consume(bootstrap: str, es_url: str, topic: str, index: str, group: str, results) -> None:
    """One consumer process, as one mapped index_partitions task runs it."""
    from confluent_kafka import Consumer, Producer

    from include.catalog_publisher import env_clients
    from include.catalog_publisher.indexer import CONSUMER_SETTINGS, DeadLetters, index_messages
    from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, **CONSUMER_SETTINGS})
    dead_letters = DeadLetters(Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS}), topic + ".dlq")
    try:
        es = env_clients.elasticsearch(es_url)
        outcome = index_messages(consumer, es, topic, index, dead_letters, batch_size=500)
    finally:
        consumer.close()
    results.put({**outcome.as_dict(), "cpu_s": time.process_time()})


def _cpu(pid: int) -> float:
    import psutil

    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system
    except psutil.NoSuchProcess:
        return 0.0


def run(state, topic: str, consumers: int, products: int) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    tag = uuid.uuid4().hex[:8]
    index, group = f"bench-{consumers}-{tag}", f"bench-{consumers}-{tag}"
    services = {name: _cpu(pid) for name, pid in state.pids.items()}
    started = time.monotonic()
    where = (state.kafka_bootstrap, state.elasticsearch_url)
    children = [context.Process(target=_consume, args=(*where, topic, index, group, results)) for _ in range(consumers)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=600) for _ in children]
    wall = time.monotonic() - started
    for child in children:
        child.join(30)
    services = {name: _cpu(state.pids[name]) - before for name, before in services.items()}

    from include.catalog_publisher import env_clients

    count = env_clients.elasticsearch(state.elasticsearch_url).count(index=index)["count"]
    assert count == products, f"{count} documents, expected {products}"
    return {
        "consumers": consumers,
        "wall_s": wall,
        "docs_per_s": products / wall,
        "consumed": sum(o["consumed"] for o in outcomes),
        "indexing_s": max(o["elapsed_s"] for o in outcomes),
        "consumer_cpu_s": sum(o["cpu_s"] for o in outcomes),
        "service_cpu_s": services,
    }


def product(i: int) -> dict:
    """A small catalog product (~130 bytes of JSON)."""
    pid = f"PROD-{i:06d}"
    return {"product_id": pid, "name": f"Product {i}", "price": i % 500 + 0.5, "image_url": f"https://cdn/{pid}.jpg"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from confluent_kafka import Producer

    from devstack.embedded_stack import EmbeddedStack, isolate_from_caller
    from include.catalog_publisher.kafka_publish import PRODUCER_SETTINGS, publish_products
    from tests.helpers import make_kafka_topic

    isolate_from_caller()
    scratch = Path(tempfile.mkdtemp(prefix="bench-indexer-"))
    stack = EmbeddedStack(scratch)
    state = stack.start()
    try:
        topic = make_kafka_topic(state.kafka_bootstrap, f"bench-{uuid.uuid4().hex[:8]}", partitions=3)
        make_kafka_topic(state.kafka_bootstrap, topic + ".dlq")
        products = [product(i) for i in range(args.products)]
        started = time.monotonic()
        publish_products(Producer({"bootstrap.servers": state.kafka_bootstrap, **PRODUCER_SETTINGS}), products, topic)
        print(f"published {args.products} products to {topic} (3 partitions) in {time.monotonic() - started:.1f}s")

        runs: dict[int, list[dict]] = {1: [], 3: []}
        for _ in range(args.repeats):
            for consumers in (1, 3):  # alternating, so drift on a shared machine hits both alike
                result = run(state, topic, consumers, args.products)
                runs[consumers].append(result)
                cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result["service_cpu_s"].items())
                print(
                    f"{consumers} consumer(s): {result['wall_s']:.1f}s, {result['docs_per_s']:,.0f} docs/s "
                    f"(indexing loop {result['indexing_s']:.1f}s, consumed {result['consumed']}); CPU seconds: "
                    f"consumers {result['consumer_cpu_s']:.1f}, {cpu}"
                )
        one, three = (statistics.median(r["wall_s"] for r in runs[n]) for n in (1, 3))
        print(
            f"median: 1 consumer {one:.1f}s ({args.products / one:,.0f} docs/s), 3 consumers {three:.1f}s "
            f"({args.products / three:,.0f} docs/s): {one / three:.2f}x"
        )
    finally:
        stack.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
