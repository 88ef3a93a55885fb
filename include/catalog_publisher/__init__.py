"""Product image publishing: manifest -> S3 upload -> URL mapping -> catalog rewrite -> Kafka.

Every step takes ready clients as arguments, so the Airflow DAGs (clients from connections) and
the runbook scripts (clients from the environment) share one implementation.
"""
