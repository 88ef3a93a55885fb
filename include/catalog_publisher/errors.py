"""The exceptions for failures a user can act on, each with a message naming the input and the fix."""

from __future__ import annotations


class PublisherError(Exception):
    """A failure caused by input or configuration: retrying will not help until the user fixes it.

    Scripts print it as one line and exit non-zero; DAG tasks fail at once, without retries (the DAGs'
    retry policy, dag_defaults.RETRY_POLICY), so the message is the last line of the task log.
    """


class ServiceUnavailableError(PublisherError):
    """A service (S3, Kafka, Elasticsearch) could not be reached or did not confirm the work.

    Unlike its parent this may pass on its own, so the DAGs' retry policy lets Airflow retry it with backoff.
    """
