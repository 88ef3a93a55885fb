#!/usr/bin/env python
"""Runbook step 5: consume product messages from Kafka and index them into Elasticsearch.

Runs until stopped (Ctrl+C or SIGTERM, finishing the batch in hand), or with --once until it has
caught up with the topic. Document id = product id; a null message deletes the product; messages
that cannot be indexed go to the dead-letter topic (<topic>.dlq) with their error. Offsets are
committed only after Elasticsearch accepted the documents.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults, env_clients  # noqa: E402
from include.catalog_publisher.defaults import DEFAULT_GROUP_ID, DEFAULT_INDEX_BATCH  # noqa: E402
from include.catalog_publisher.indexer import DeadLetters, index_messages  # noqa: E402


def main() -> int:
    parser = cli.parser(__doc__)
    parser.add_argument(
        "--once", action="store_true", help="stop when caught up with the topic instead of running until stopped"
    )
    parser.add_argument(
        "--topic", default=defaults.DEFAULT_TOPIC, help=f"Kafka topic (default {defaults.DEFAULT_TOPIC})"
    )
    parser.add_argument(
        "--index", default=defaults.DEFAULT_INDEX, help=f"Elasticsearch index (default {defaults.DEFAULT_INDEX})"
    )
    parser.add_argument("--group-id", default=DEFAULT_GROUP_ID, help=f"consumer group (default {DEFAULT_GROUP_ID})")
    parser.add_argument(
        "--dead-letter-topic", help=f"where refused messages go (default <topic>{defaults.DEAD_LETTER_SUFFIX})"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_INDEX_BATCH,
        help=f"messages per bulk request (default {DEFAULT_INDEX_BATCH})",
    )
    parser.add_argument("--bootstrap-servers", help="Kafka brokers (default: KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--elasticsearch-url", help="Elasticsearch URL (default: ELASTICSEARCH_URL)")
    args = parser.parse_args()

    es = env_clients.elasticsearch(args.elasticsearch_url)
    consumer, _ = env_clients.kafka_consumer(args.group_id, args.bootstrap_servers)
    producer, _ = env_clients.kafka_producer(args.bootstrap_servers)
    dead_letters = DeadLetters(producer, args.dead_letter_topic or args.topic + defaults.DEAD_LETTER_SUFFIX)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        outcome = index_messages(
            consumer,
            es,
            args.topic,
            args.index,
            dead_letters,
            batch_size=args.batch_size,
            until_caught_up=args.once,
            should_stop=lambda: bool(stopping),
        )
    finally:
        consumer.close()  # leaves the group at once, so a restart is not kept waiting
    print(
        f"indexed {outcome.indexed}, deleted {outcome.deleted}, "
        f"dead-lettered {outcome.dead_lettered} of {outcome.consumed} messages "
        f"from '{args.topic}' into index '{args.index}'"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
