"""The indexer's consumer plan (plan_consumers): how many consumers the DAG maps, per topic and group."""

from __future__ import annotations

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.indexer import plan_consumers


def test_one_consumer_per_partition_by_default_capped_by_the_partitions():
    """The param's default, an explicit count, a count above the partitions (extra members would hold none),
    and one group per topic when a run has several (mixed subscriptions in one group are assigned wrongly)."""
    assert [(c["topic"], c["group"], c["consumer"], c["of"]) for c in plan_consumers({"a": 3, "b": 1}, group="g")] == [
        ("a", "g.a", 1, 3),
        ("a", "g.a", 2, 3),
        ("a", "g.a", 3, 3),
        ("b", "g.b", 1, 1),
    ]
    assert {c["group"] for c in plan_consumers({"a": 3}, group="g")} == {"g"}  # one topic: the group as given
    assert [c["of"] for c in plan_consumers({"a": 3}, 2)] == [2, 2]
    assert [c["of"] for c in plan_consumers({"a": 3}, 8)] == [3, 3, 3]
    with pytest.raises(PublisherError, match="at least 1"):
        plan_consumers({"a": 3}, 0)
