#!/usr/bin/env python
"""Runbook step 4: publish the updated catalog to Kafka, one message per product.

Key = product id, value = the product as JSON. The producer is idempotent with acks=all, and the
command exits 0 only when the broker confirmed every product. A missing topic is created
(PUBLISHER_TOPIC_PARTITIONS, PUBLISHER_TOPIC_REPLICATION_FACTOR, PUBLISHER_TOPIC_RETENTION_MS).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults, env_clients  # noqa: E402
from include.catalog_publisher.catalog import read_products  # noqa: E402
from include.catalog_publisher.kafka_publish import publish_products  # noqa: E402


def main() -> int:
    parser = cli.parser(__doc__)
    parser.add_argument(
        "--products-file",
        default=defaults.UPDATED_CATALOG_FILE,
        help=f"catalog to publish (default {defaults.UPDATED_CATALOG_FILE})",
    )
    parser.add_argument(
        "--topic", default=defaults.DEFAULT_TOPIC, help=f"Kafka topic (default {defaults.DEFAULT_TOPIC})"
    )
    parser.add_argument(
        "--bootstrap-servers", help="Kafka brokers, host:port[,host:port] (default: KAFKA_BOOTSTRAP_SERVERS)"
    )
    args = parser.parse_args()
    producer, servers = env_clients.kafka_producer(args.bootstrap_servers)
    outcome = publish_products(producer, read_products(args.products_file), args.topic, where=servers)
    print(
        f"published {outcome.delivered} products to topic '{outcome.topic}' at {servers} "
        f"in {outcome.elapsed_s:.1f}s, every one confirmed"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
