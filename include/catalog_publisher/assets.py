"""The Airflow assets the DAGs share (imported by DAG files: nothing here but the definitions)."""

from __future__ import annotations

from airflow.sdk import Asset

# The Kafka topic the publisher writes the catalog to; index_product_catalog is scheduled on it.
# Each event's extra names the topic, the product count and the published catalog file.
PRODUCTS_TOPIC = Asset(name="product_catalog_topic", uri="kafka://kafka_default/products")
