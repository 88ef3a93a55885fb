#!/usr/bin/env python
"""Runbook step 4: publish the updated catalog to Kafka, one message per product.

Key = product id, value = the product as JSON. The producer is idempotent with acks=all, and the
command exits 0 only when the broker confirmed every product. A missing topic is created
(PUBLISHER_TOPIC_PARTITIONS, PUBLISHER_TOPIC_REPLICATION_FACTOR, PUBLISHER_TOPIC_RETENTION_MS).
With --dry-run the catalog is read and every product checked for an id (the error a real run gives),
and how many products would be published to which topic is printed; Kafka is not contacted at all
(neither the brokers nor the topic are checked), no topic is created and nothing is sent.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults, env_clients  # noqa: E402
from include.catalog_publisher.catalog import read_products  # noqa: E402
from include.catalog_publisher.kafka_publish import product_key, publish_products  # noqa: E402


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
    cli.add_dry_run(
        parser,
        "reads the catalog and checks every product has an id; does not connect to Kafka "
        "(brokers and topic unchecked), creates no topic, sends nothing",
    )
    args = parser.parse_args()
    if args.dry_run:
        return dry_run(args)
    producer, servers = env_clients.kafka_producer(args.bootstrap_servers)
    outcome = publish_products(producer, read_products(args.products_file), args.topic, where=servers)
    print(
        f"published {outcome.delivered} products to topic '{outcome.topic}' at {servers} "
        f"in {outcome.elapsed_s:.1f}s, every one confirmed"
    )
    return 0


class _NothingProduced:
    """Stands for the producer where product_key would flush it before refusing a product: a dry run sent nothing."""

    def flush(self, timeout: float) -> int:
        return 0


def dry_run(args) -> int:
    """Count the products a real run would publish, keyed as it keys them; no Kafka client is made."""
    servers = env_clients.kafka_bootstrap(args.bootstrap_servers)  # where it would go: the setting, not a connection
    products = 0
    for number, product in enumerate(read_products(args.products_file), 1):
        product_key(_NothingProduced(), product, number)  # a product without an id: the error a real run gives
        products = number
    print(
        f"dry run: {products} products would be published to topic '{args.topic}' at {servers} "
        "(created if missing); Kafka was not contacted and nothing was sent"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
