"""The indexer's bulk retries against a real HTTP server answering 502: growing backoff, then a service error."""

from __future__ import annotations

import pytest

from include.catalog_publisher import env_clients
from include.catalog_publisher.errors import ServiceUnavailableError
from include.catalog_publisher.indexer import BULK_RETRIES, IndexOutcome, _bulk
from tests.helpers import elasticsearch_answering_502


@pytest.fixture
def failing_elasticsearch():
    """A real HTTP server answering 502 to everything: the media-type proxy in front of a dead engine."""
    with elasticsearch_answering_502() as url:
        yield env_clients.elasticsearch(url)


@pytest.mark.fault(
    "Elasticsearch answering 502 to every bulk request",
    "retried with growing backoff, then a service error saying nothing of the batch was committed",
)
def test_5xx_answers_are_retried_with_growing_backoff_then_fail_without_commit(failing_elasticsearch):
    slept: list[float] = []
    outcome = IndexOutcome()
    actions = [({"index": {"_index": "x", "_id": "PROD-1"}}, {"product_id": "PROD-1"}, None)]
    with pytest.raises(
        ServiceUnavailableError,
        match=(
            f"did not accept 1 documents after {BULK_RETRIES} retries \\(HTTP 502\\)"
            ".*nothing of this batch was committed"
        ),
    ):
        _bulk(failing_elasticsearch.options(max_retries=0), actions, outcome, slept.append)
    assert slept == [0.5 * 2**i for i in range(BULK_RETRIES)]
    assert outcome.indexed == 0 and outcome.retried_items == BULK_RETRIES
