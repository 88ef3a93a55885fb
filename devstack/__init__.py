"""Development wiring for the demo, the tests and the benchmark: the embedded stack (SeaweedFS, Tansu,
osmem), the Elasticsearch media-type proxy, Airflow on SQLite with dag.test(), and sample data.

Nothing in include/ or dags/ imports it, and the production image does not contain it.
"""
