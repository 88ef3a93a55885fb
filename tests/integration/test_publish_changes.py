"""The DAG's publish against a real Tansu broker: only changed products and tombstones are sent, and the
published state stays right when it is lost, outdated, raced by another publish, or its run is killed."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from include.catalog_publisher import published_state
from include.catalog_publisher.catalog_changes import publish_changes, state_reader, with_values
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.kafka_publish import make_producer, publish_products
from tests.helpers import KAFKA_PRODUCTS as PRODUCTS
from tests.helpers import make_kafka_topic, partition_ends, read_messages, read_topic


def _publish(stack, topic, products, saved=None, **options):
    producer = make_producer({"bootstrap.servers": stack.kafka_bootstrap})
    ids = {p["product_id"] for p in products}
    return publish_changes(producer, with_values(products), topic, ids, saved, where=stack.kafka_bootstrap, **options)


def _live(stack, topic) -> dict:
    """What the topic holds: the last value of each key, tombstoned keys left out."""
    live: dict = {}
    for key, value in read_topic(stack.kafka_bootstrap, topic):
        live[key] = value
    return {k: v for k, v in live.items() if v is not None}


def _as_catalog(products) -> dict:
    return {p["product_id"]: p for p in products}


def test_a_rerun_with_nothing_changed_sends_nothing(stack, topic, caplog):
    first, state = _publish(stack, topic, PRODUCTS)
    caplog.set_level(logging.INFO, logger="include.catalog_publisher.published_state")
    again, state = _publish(stack, topic, PRODUCTS, state)
    assert (first.published, first.removed) == (len(PRODUCTS), 0)
    assert (again.published, again.removed, again.unchanged) == (0, 0, len(PRODUCTS))
    assert len(read_messages(stack.kafka_bootstrap, topic)) == len(PRODUCTS)
    assert "messages of topic" not in caplog.text  # the saved state was trusted: nothing was read back


def _no_settled(state):
    state.settled = None
    return state


class Counted:
    """The products, counting how many a publish read."""

    def __init__(self, products):
        self.products, self.read = products, 0

    def __iter__(self):
        for product in self.products:
            self.read += 1
            yield product


def test_a_catalog_settled_with_the_state_is_not_compared_again_until_something_moves(stack, topic):
    _, state = _publish(stack, topic, PRODUCTS[:-1], catalog="catalog 0")
    compared, state = _publish(stack, topic, PRODUCTS, state, catalog="catalog 1")  # one more product, alone
    assert (compared.published, compared.unchanged) == (1, len(PRODUCTS) - 1)
    assert state.settled == {"catalog": "catalog 1", "unchanged": len(PRODUCTS), "older_than_live": 0}
    compared, state = _publish(stack, topic, PRODUCTS, _no_settled(state), catalog="catalog 1")  # compared in full
    assert state.settled == {"catalog": "catalog 1", "unchanged": len(PRODUCTS), "older_than_live": 0}

    products, producer = Counted(PRODUCTS), make_producer({"bootstrap.servers": stack.kafka_bootstrap})
    ids = {p["product_id"] for p in PRODUCTS}
    again, state = publish_changes(producer, with_values(products), topic, ids, state, where="", catalog="catalog 1")
    assert products.read == 0 and again.as_dict() | {"seconds": 0} == compared.as_dict() | {"seconds": 0}

    replayed, state = _publish(stack, topic, PRODUCTS, state, catalog="catalog 1", republish_all=True)
    assert replayed.published == len(PRODUCTS) and state.settled["catalog"] == "catalog 1"

    stray = {**PRODUCTS[3], "name": "written by the runbook's producer"}
    publish_products(make_producer({"bootstrap.servers": stack.kafka_bootstrap}), [stray], topic)
    moved, state = _publish(stack, topic, PRODUCTS, state, catalog="catalog 1")
    assert (moved.published, moved.unchanged) == (1, len(PRODUCTS) - 1)  # the topic moved: compared in full
    assert _live(stack, topic) == _as_catalog(PRODUCTS)

    _, state = _publish(stack, topic, PRODUCTS, state, catalog="catalog 1")
    assert state.settled is not None
    changed = [{**PRODUCTS[0], "price": 5.0}, *PRODUCTS[1:]]
    other, _ = _publish(stack, topic, changed, state, catalog="catalog 2")
    assert (other.published, other.unchanged) == (1, len(PRODUCTS) - 1)


def test_one_change_and_one_removal_send_one_message_and_one_tombstone(stack, topic):
    _, state = _publish(stack, topic, PRODUCTS)
    catalog = [{**PRODUCTS[0], "price": 99.0}, *PRODUCTS[1:-1]]  # PROD-0 changed, PROD-49 removed
    outcome, state = _publish(stack, topic, catalog, state)
    assert (outcome.published, outcome.removed, outcome.unchanged) == (1, 1, len(PRODUCTS) - 2)
    messages = read_topic(stack.kafka_bootstrap, topic)
    assert len(messages) == len(PRODUCTS) + 2  # exactly one more message and one tombstone
    assert ("PROD-0", catalog[0]) in messages and ("PROD-49", None) in messages
    assert _live(stack, topic) == _as_catalog(catalog)
    assert state.documents == _read_back(stack, topic).documents  # the saved state is what the topic holds


def _read_back(stack, topic):
    reader = state_reader(make_producer({"bootstrap.servers": stack.kafka_bootstrap}))
    try:
        return published_state.current(None, reader, topic)
    finally:
        reader.close()


@pytest.mark.fault(
    "the published state is lost (deleted, never copied to a new artifact location)",
    "the topic is read back: the run sends the same changes and tombstones it would have sent with the state",
)
def test_without_a_state_the_topic_is_read_back_and_the_same_changes_go(stack, topic, caplog):
    _publish(stack, topic, PRODUCTS)
    caplog.set_level(logging.INFO, logger="include.catalog_publisher.published_state")
    outcome, _ = _publish(stack, topic, PRODUCTS[:-1], saved=None)
    assert (outcome.published, outcome.removed, outcome.unchanged) == (0, 1, len(PRODUCTS) - 1)
    assert f"read {len(PRODUCTS)} messages of topic {topic} back" in caplog.text
    assert _live(stack, topic) == _as_catalog(PRODUCTS[:-1])


@pytest.mark.fault(
    "another producer (the runbook's, another deployment) wrote to the topic since the state was saved, "
    "at once (Tansu's ListOffsets does not move for a second write within the same second)",
    "the topic is read from the state's end offsets, finds the message: it is read back and the catalog's "
    "version goes out again",
)
def test_a_topic_written_by_someone_else_since_is_read_back(stack, topic, caplog):
    _, state = _publish(stack, topic, PRODUCTS)
    # The state's ends are the partitions' true ends (fetched), not ListOffsets' (Tansu: newest batch's base + 1).
    assert state.ends == partition_ends(stack.kafka_bootstrap, topic)
    stray = {**PRODUCTS[3], "name": "written by the runbook's producer"}
    publish_products(make_producer({"bootstrap.servers": stack.kafka_bootstrap}), [stray], topic)
    outcome, _ = _publish(stack, topic, PRODUCTS, state)
    assert "was written since the published state was saved" in caplog.text
    assert (outcome.published, outcome.unchanged) == (1, len(PRODUCTS) - 1)
    assert _live(stack, topic) == _as_catalog(PRODUCTS)


@pytest.mark.fault(
    "the topic was deleted and recreated since the state was saved, holding fewer products now",
    "even with no topic id to compare (a broker that tells none), reading from the state's end offsets finds other "
    "ends: the topic is read back and what it lacks goes out again",
)
def test_a_recreated_topic_is_read_back(stack, topic, caplog):
    from confluent_kafka.admin import AdminClient

    _, state = _publish(stack, topic, PRODUCTS)
    state.topic_id = None  # as from a broker that tells no topic ids: the shorter partitions alone must tell
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=15)
    make_kafka_topic(stack.kafka_bootstrap, topic)
    publish_products(make_producer({"bootstrap.servers": stack.kafka_bootstrap}), PRODUCTS[:5], topic)
    started = time.monotonic()
    outcome, _ = _publish(stack, topic, PRODUCTS, state)
    assert time.monotonic() - started < 30
    assert "was written since the published state was saved" in caplog.text
    assert (outcome.published, outcome.unchanged) == (len(PRODUCTS) - 5, 5)
    assert _live(stack, topic) == _as_catalog(PRODUCTS)


@pytest.mark.fault(
    "the topic was deleted and recreated since the state was saved, and refilled to exactly the saved end offsets",
    "the topic's id differs from the one the state recorded: the topic is read back and the catalog goes out again",
)
def test_a_topic_recreated_and_refilled_to_the_saved_ends_is_read_back(stack, topic, caplog):
    """Offsets cannot tell this topic from the one the state was saved for; its id does."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    _, state = _publish(stack, topic, PRODUCTS)
    assert state.topic_id
    placed = [(m.partition(), m.key()) for m in read_messages(stack.kafka_bootstrap, topic)]
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})  # kept: a client gone ends its requests
    admin.delete_topics([topic])[topic].result(timeout=15)
    make_kafka_topic(stack.kafka_bootstrap, topic)
    other = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for partition, key in placed:  # the same products in the same partitions, but other documents
        other.produce(
            topic, key=key, value=json.dumps({"product_id": key.decode(), "name": "stale"}), partition=partition
        )
    assert other.flush(30) == 0
    assert partition_ends(stack.kafka_bootstrap, topic) == state.ends  # refilled to exactly the saved ends

    outcome, new_state = _publish(stack, topic, PRODUCTS, state)
    assert (outcome.published, outcome.removed, outcome.unchanged) == (len(PRODUCTS), 0, 0)  # trusted: (0, 0, 50)
    assert "deleted and created again since the published state was saved" in caplog.text
    assert new_state.topic_id and new_state.topic_id != state.topic_id
    assert _live(stack, topic) == _as_catalog(PRODUCTS)


@pytest.mark.fault(
    "two publishes to one topic at once, from the same saved state",
    "each saved state either matches the topic or is seen as outdated: the next run leaves the topic = the catalog",
)
def test_two_publishes_at_once_leave_a_state_the_next_run_can_trust(stack, topic):
    _, base = _publish(stack, topic, PRODUCTS)
    versions = {name: [{**p, "name": f"{p['name']} ({name})"} for p in PRODUCTS] for name in ("first", "second")}
    states: dict = {}

    def run(name):
        saved = published_state.PublishedState(topic, dict(base.documents), dict(base.days), dict(base.ends))
        states[name] = _publish(stack, topic, versions[name], saved, catalog=name)[1]

    threads = [threading.Thread(target=run, args=(name,)) for name in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(states) == {"first", "second"}
    topic_now = _read_back(stack, topic)
    for state in states.values():  # trusted only if it is exactly what the topic holds
        assert state.ends != topic_now.ends or state.documents == topic_now.documents
    for name, state in states.items():  # a writer's catalog again, from its state (settled with it only if alone)
        again = published_state.PublishedState(topic, **_fields(state), settled=state.settled)
        _publish(stack, topic, versions[name], again, catalog=name)
        assert _live(stack, topic) == _as_catalog(versions[name])
    final = [{**p, "price": 1.0} for p in PRODUCTS[:10]] + PRODUCTS[10:]
    for state in states.values():  # whichever state the next run finds
        _publish(stack, topic, final, published_state.PublishedState(topic, **_fields(state)))
        assert _live(stack, topic) == _as_catalog(final)


def _fields(state):
    return {"documents": dict(state.documents), "days": dict(state.days), "ends": dict(state.ends)}


_KILLED_PUBLISH = """
import sys, time
sys.path.insert(0, {root!r})
from include.catalog_publisher.catalog_changes import publish_changes, with_values
from include.catalog_publisher.kafka_publish import make_producer

def products():  # the first 500 confirmed, then a pause in which the test sees them and kills the publish
    for i in range({count}):
        if i == 500:
            producer.flush(30)
            time.sleep(60)
        yield {{"product_id": f"K-{{i}}", "n": i}}

producer = make_producer({{"bootstrap.servers": {bootstrap!r}}})
ids = {{f"K-{{i}}" for i in range({count})}}
publish_changes(producer, with_values(products()), {topic!r}, ids, None, where="test")
"""


@pytest.mark.fault(
    "the publish killed (SIGKILL) half-way, before it saved the state",
    "the next run finds the topic moved past the last saved state, reads it back, sends only what is missing",
)
def test_a_publish_killed_half_way_is_completed_by_the_next_run(stack, topic):
    _, saved = _publish(stack, topic, [{"product_id": "K-0", "n": -1}])  # the state before the killed run
    count = 3000
    script = _KILLED_PUBLISH.format(root=str(project_root()), count=count, bootstrap=stack.kafka_bootstrap, topic=topic)
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    try:
        deadline = time.monotonic() + 60
        while len(read_messages(stack.kafka_bootstrap, topic)) < 300 and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(10)
    landed = {k for k, v in read_topic(stack.kafka_bootstrap, topic) if v is not None and v["n"] >= 0}
    assert 300 <= len(landed) < count, "the kill should land half-way"
    catalog = [{"product_id": f"K-{i}", "n": i} for i in range(count)]
    outcome, _ = _publish(stack, topic, catalog, saved)
    assert (outcome.published, outcome.unchanged) == (count - len(landed), len(landed))
    assert _live(stack, topic) == _as_catalog(catalog)


def test_the_state_round_trips_through_its_file(stack, topic, tmp_path):
    _, state = _publish(stack, topic, PRODUCTS)
    published_state.save(tmp_path / "state.json", state)
    outcome, _ = _publish(stack, topic, PRODUCTS, published_state.load(tmp_path / "state.json", topic))
    assert outcome.unchanged == len(PRODUCTS) and json.loads((tmp_path / "state.json").read_text())["topic"] == topic


def test_a_dry_run_counts_what_would_go_and_creates_no_topic(stack):
    fresh = f"dry-{uuid.uuid4().hex[:8]}"
    outcome, _ = _publish(stack, fresh, PRODUCTS, dry_run=True)
    assert (outcome.published, outcome.removed, outcome.dry_run) == (len(PRODUCTS), 0, True)
    producer = make_producer({"bootstrap.servers": stack.kafka_bootstrap})
    assert fresh not in producer.list_topics(timeout=10).topics  # nothing created, nothing sent


def test_a_dry_run_against_a_live_topic_sends_nothing(stack, topic):
    _, state = _publish(stack, topic, PRODUCTS)
    outcome, _ = _publish(stack, topic, [{**PRODUCTS[0], "price": 1.0}, *PRODUCTS[1:-1]], state, dry_run=True)
    assert (outcome.published, outcome.removed, outcome.unchanged) == (1, 1, len(PRODUCTS) - 2)
    assert len(read_messages(stack.kafka_bootstrap, topic)) == len(PRODUCTS)


@pytest.mark.fault(
    "the catalog topic gained partitions since the last publish",
    "the publish fails before sending anything, naming both partition counts and the two ways on (a new topic with "
    "republish_all, or accept_partition_change, which reads the topic back and goes on)",
)
def test_a_topic_that_gained_partitions_is_refused_before_anything_is_sent(stack, topic):
    """Tansu cannot add partitions (no CreatePartitions), so the state is one saved while the topic had two of its
    three partitions: what a run finds after `kafka-topics --alter --partitions 3` on Kafka."""
    _, state = _publish(stack, topic, PRODUCTS)
    ends = dict(state.ends)
    state.ends = {p: end for p, end in ends.items() if p != max(ends)}
    before = len(read_messages(stack.kafka_bootstrap, topic))
    changed = [{**PRODUCTS[0], "name": "renamed"}, *PRODUCTS[1:]]

    with pytest.raises(PublisherError, match=rf"topic {topic} has 3 partitions, 2 when the last publish saved its"):
        _publish(stack, topic, changed, state)
    assert len(read_messages(stack.kafka_bootstrap, topic)) == before  # nothing was sent

    accepted, state = _publish(stack, topic, changed, state, accept_partition_change=True)
    assert (accepted.published, accepted.unchanged) == (1, len(PRODUCTS) - 1)  # read back: only the change went
    assert set(state.ends) == set(ends)  # the next run compares against all three partitions


@pytest.mark.fault(
    "the catalog topic's cleanup.policy is not compact (delete, compact,delete, or the broker's default)",
    "the saved state is never trusted: each run reads the topic back and sends what it no longer holds; the run's "
    "result and report say why (read_back)",
)
def test_a_topic_whose_records_expire_is_read_back_every_run(stack):
    topic = make_kafka_topic(stack.kafka_bootstrap, f"expiring-{uuid.uuid4().hex[:8]}", cleanup_policy="delete")
    first, state = _publish(stack, topic, PRODUCTS)
    again, state = _publish(stack, topic, PRODUCTS, state)
    assert first.published == len(PRODUCTS) and (again.published, again.unchanged) == (0, len(PRODUCTS))
    assert again.read_back == (
        "its cleanup.policy is delete, so records expire and products the state lists may be gone from it"
    )


@pytest.mark.fault(
    "records removed from the start of the catalog topic (time retention, DeleteRecords) since the last publish",
    "the saved state is not trusted: the topic is read back, so products no longer on it are sent again; the run's "
    "result and report say why (read_back)",
)
def test_records_removed_from_the_start_of_the_topic_make_the_state_untrusted(stack, topic):
    """Tansu removes no records (no DeleteRecords, no time retention), so the state is one whose recorded starts lie
    before the topic's: what a run finds after retention removed the first records on Kafka."""
    _, state = _publish(stack, topic, PRODUCTS)
    assert state.starts == dict.fromkeys(state.ends, 0)
    trusted, state = _publish(stack, topic, PRODUCTS, state)
    assert trusted.read_back == ""
    state.starts = {partition: -1 for partition in state.starts}

    again, state = _publish(stack, topic, PRODUCTS, state)
    assert again.read_back.startswith("records were removed from the start of the topic")
    assert (again.published, again.unchanged) == (0, len(PRODUCTS))  # compared with what the topic holds
    assert state.starts == dict.fromkeys(state.ends, 0)  # the next run checks against where it starts now


def test_a_topic_that_gained_partitions_is_refused_whatever_its_cleanup_policy(stack):
    """A topic read back every run (its records expire) is refused too: the refusal comes before any reading."""
    topic = make_kafka_topic(stack.kafka_bootstrap, f"expiring-{uuid.uuid4().hex[:8]}", cleanup_policy="delete")
    _, state = _publish(stack, topic, PRODUCTS)
    state.ends = {p: end for p, end in state.ends.items() if p != max(state.ends)}
    with pytest.raises(PublisherError, match=rf"topic {topic} has 3 partitions, 2 when the last publish saved its"):
        _publish(stack, topic, PRODUCTS, state)


def test_a_dated_run_never_takes_a_live_image_away_nor_puts_an_older_one_back(stack, topic):
    """A dated run's catalog may be behind the uploaded images record (a concurrent run uploaded a newer image, or
    its scan began before a file landed): a product whose image there is older than the record's, or that has none
    while its live document has one, is left as it is live; the others go."""
    dated = [
        {"product_id": "P1", "name": "lamp", "image_url": "u/2025-06-02/P1.jpg", "image_date": "2025-06-02"},
        {"product_id": "P2", "name": "vase", "image_url": "u/2025-06-01/P2.jpg", "image_date": "2025-06-01"},
    ]
    _, state = _publish(stack, topic, dated)
    behind = [
        {"product_id": "P1", "name": "lamp, renamed"},  # no image: the run's catalog is behind
        {"product_id": "P2", "name": "vase", "image_url": "u/2025-06-01/P2.jpg", "image_date": "2025-06-01"},
        {"product_id": "P3", "name": "new", "image_url": "u/2025-06-01/P3.jpg", "image_date": "2025-06-01"},
    ]
    newest = {"P1": "2025-06-02", "P2": "2025-06-03", "P3": "2025-06-01"}  # P2: a newer image was uploaded since

    outcome, _ = _publish(stack, topic, behind, state, newest_days=newest)

    assert (outcome.published, outcome.unchanged, outcome.older_than_live) == (1, 0, 2)
    live = _live(stack, topic)
    assert live["P1"] == dated[0] and live["P2"] == dated[1] and live["P3"] == behind[2]
