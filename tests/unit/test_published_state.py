"""The published state on disk, and the choice of messages a run sends against it (no broker: see
tests/integration/test_publish_changes.py for the topic itself)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from include.catalog_publisher import published_state
from include.catalog_publisher.catalog_changes import _changes, _check_removals, with_values
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.kafka_publish import message_value
from include.catalog_publisher.published_state import PublishedState, message_digest


def _state_of(products: list[dict], topic: str = "products") -> PublishedState:
    state = PublishedState(topic, ends={0: 3, 1: 4})
    for p in products:
        state.record(p["product_id"], message_value(p), p.get("image_date"))
    return state


PRODUCTS = [{"product_id": f"P-{i}", "name": f"product {i}"} for i in range(4)]


def test_a_saved_state_loads_back_as_it_was(tmp_path):
    state = _state_of([*PRODUCTS, {"product_id": "P-9", "image_date": "2025-06-04"}])
    state.topic_id = "AaIYhqAHdlCCahgO3T+T4g"
    published_state.save(tmp_path / "state.json", state)
    assert published_state.load(tmp_path / "state.json", "products") == state


def test_a_state_saved_before_topic_ids_were_kept_loads_without_one(tmp_path):
    state = _state_of(PRODUCTS)
    path = tmp_path / "state.json"
    published_state.save(path, state)
    data = json.loads(path.read_text())
    del data["topic_id"]
    path.write_text(json.dumps(data))
    loaded = published_state.load(path, "products")
    assert loaded == state and loaded.topic_id is None


def test_a_settled_catalog_is_kept_with_the_state_and_forgotten_when_a_document_changes(tmp_path):
    state = _state_of(PRODUCTS)
    state.settled = {"catalog": "c0ffee", "unchanged": 4, "older_than_live": 0}
    published_state.save(tmp_path / "state.json", state)
    assert published_state.load(tmp_path / "state.json", "products").settled == state.settled

    state.record("P-1", message_value({"product_id": "P-1", "name": "renamed"}))
    assert state.settled is None  # the documents no longer are what that catalog was compared with


@pytest.mark.parametrize(
    "content, why",
    [
        (None, "No such file"),
        ('{"format": "catalog-publisher/published-state", "version": 1, "topic": "products", "docu', "Unterminated"),
        (json.dumps({"format": "something else", "version": 1}), "not a version 1"),
        (json.dumps({"format": published_state.FORMAT, "version": 1, "topic": "other"}), "topic 'other'"),
        (json.dumps({"format": published_state.FORMAT, "version": 1, "topic": "products"}), "documents"),
        ("\xff\xfe not text", "decode"),
        (
            json.dumps(
                {"format": published_state.FORMAT, "version": 1, "topic": "products", "documents": {}, "days": {}}
                | {"ends": {}, "settled": {"catalog": "c0ffee", "unchanged": "4"}}
            ),
            "settled is not a catalog digest",
        ),
    ],
    ids=["missing", "cut short", "foreign", "another topic", "incomplete", "not UTF-8", "bad settled catalog"],
)
@pytest.mark.fault(
    "the published state is lost, cut short, foreign or another topic's",
    "it is ignored with a warning and the topic is read back instead: a slower run, the same result",
)
def test_a_state_that_cannot_be_trusted_is_ignored_with_the_reason(tmp_path, caplog, content, why):
    path = tmp_path / "state.json"
    if content is not None:
        path.write_bytes(content.encode("latin-1") if content.startswith("\xff") else content.encode())
    assert published_state.load(path, "products") is None
    assert "ignoring the published state" in caplog.text and why in caplog.text


def test_a_tombstone_forgets_the_product_and_its_day():
    state = _state_of([{"product_id": "P-1", "image_date": "2025-06-01"}])
    state.record("P-1", None)
    assert state.documents == {} and state.days == {}


def _sent(products, state, removed=(), republish_all=False):
    counts: Counter[str] = Counter()
    messages = list(_changes(None, with_values(products), state, list(removed), counts, republish_all))
    return [(key, json.loads(value) if value else None) for key, value in messages], counts


def test_only_changed_products_are_sent_then_the_tombstones():
    state = _state_of(PRODUCTS)
    changed = [*PRODUCTS[:2], {**PRODUCTS[2], "name": "renamed"}, PRODUCTS[3], {"product_id": "P-new"}]
    sent, counts = _sent(changed, state, removed=["P-gone"])
    assert sent == [
        ("P-2", {"product_id": "P-2", "name": "renamed"}),
        ("P-new", {"product_id": "P-new"}),
        ("P-gone", None),
    ]
    assert counts == {"unchanged": 3}


def test_republish_all_sends_every_product_again():
    sent, counts = _sent(PRODUCTS, _state_of(PRODUCTS), republish_all=True)
    assert [key for key, _ in sent] == ["P-0", "P-1", "P-2", "P-3"] and not counts


def test_an_older_day_of_a_product_is_never_sent_over_a_newer_one():
    state = _state_of([{"product_id": "P-1", "image_date": "2025-06-04", "image_url": "new"}])
    older = {"product_id": "P-1", "image_date": "2025-06-01", "image_url": "old"}
    same_day = {"product_id": "P-1", "image_date": "2025-06-04", "image_url": "fixed"}
    assert _sent([older], state) == ([], Counter(older=1))
    assert _sent([same_day], state)[0] == [("P-1", same_day)]


def test_the_digest_is_of_the_message_value():
    assert _state_of(PRODUCTS[:1]).documents == {"P-0": message_digest(message_value(PRODUCTS[0]))}


@pytest.mark.fault(
    "a catalog that would remove more published products than max_deletions, or an empty catalog",
    "the publish fails before sending anything, naming the count, examples and the setting",
)
def test_removals_past_the_limit_or_from_an_empty_catalog_stop_before_anything_is_sent():
    with pytest.raises(PublisherError, match=r"3 published products are no longer .*\(e.g. A, B, C\).*max_deletions 2"):
        _check_removals(["A", "B", "C"], 10, 2)
    with pytest.raises(PublisherError, match="the catalog has no products: publishing it would remove all 3"):
        _check_removals(["A", "B", "C"], 0, None)
    _check_removals(["A", "B"], 10, 2)  # at the limit: allowed
    _check_removals([], 0, 0)  # nothing published, nothing removed


def test_of_duplicated_ids_the_last_copy_is_the_one_left_live():
    first, last = {"product_id": "P-1", "name": "first copy"}, {"product_id": "P-1", "name": "last copy"}
    sent, _ = _sent([first, last], _state_of([last]))  # live: the last copy; the first differs from it
    assert sent == [("P-1", first), ("P-1", last)]  # so the last copy is sent after it, and stays live


def test_catalog_ids_round_trip_whatever_characters_they_hold(tmp_path):
    from include.catalog_publisher.catalog import read_catalog_ids, rewrite_catalog

    ids = ["PROD-1\r", "PROD 2\n", "ü/3", "4"]
    (tmp_path / "catalog.json").write_text(json.dumps([{"product_id": pid} for pid in ids]))
    rewrite_catalog(tmp_path / "catalog.json", {}, tmp_path / "out.json", ids_file=tmp_path / "ids")
    assert read_catalog_ids(tmp_path / "ids") == set(ids)  # no id loses or gains a character: no false tombstone
