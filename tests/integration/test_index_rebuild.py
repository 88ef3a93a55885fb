"""The search index behind an alias, rebuilt from the topic beside the live one and swapped in (reindex.py), against
real Tansu and the embedded Elasticsearch-API engine: live indexing and a publish go on during the rebuild while a
poller searches through the alias."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from include.catalog_publisher import env_clients
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.index_versions import is_version_of, live_index, versions
from include.catalog_publisher.indexer import DeadLetters, index_messages
from include.catalog_publisher.kafka_publish import publish_products
from include.catalog_publisher.reindex import Switch, plan, verify_version
from tests.helpers import committed_offsets, indexer_caught_up, make_kafka_topic, partition_ends


def product(i: int, day: str = "2026-12-01", **extra) -> dict:
    return {
        "product_id": f"P-{i:05d}",
        "name": f"Lamp {i}",
        "price": float(i),
        "image_date": day,
        "image_url": f"https://cdn/{day}/{i}.jpg",
        **extra,
    }


@pytest.fixture
def es(stack):
    client = env_clients.elasticsearch(stack.elasticsearch_url)
    yield client
    client.close()


@pytest.fixture
def topic(stack):
    name = f"rb-{uuid.uuid4().hex[:8]}"
    make_kafka_topic(stack.kafka_bootstrap, name)
    make_kafka_topic(stack.kafka_bootstrap, name + ".dlq")
    return name


@pytest.fixture
def threads():
    """The test's background threads (live indexer, poller): stopped at the end whatever happened, before the stack
    they talk to goes."""
    started = []
    yield started
    for thread in started:
        thread.stop.set()
    for thread in started:
        thread.join(60)


def publish(stack, topic, products):
    producer, _ = env_clients.kafka_producer(stack.kafka_bootstrap)
    try:
        publish_products(producer, products, topic)
    finally:
        producer.flush(10)


def switch_for(stack, es, topic, batch_size=200) -> Switch:
    producer, _ = env_clients.kafka_producer(stack.kafka_bootstrap)
    consumer_for = lambda group: env_clients.kafka_consumer(group, stack.kafka_bootstrap)[0]  # noqa: E731
    return Switch(es, consumer_for, DeadLetters(producer, topic + ".dlq"), batch_size)


class LiveIndexer(threading.Thread):
    """The live indexer as index_product_catalog runs it (its group, writing through the alias), never stopping."""

    def __init__(self, stack, topic, alias, group):
        super().__init__(daemon=True)
        self.stack, self.topic, self.alias, self.group = stack, topic, alias, group
        self.stop, self.outcome, self.error = threading.Event(), None, None

    def run(self):
        consumer, _ = env_clients.kafka_consumer(self.group, self.stack.kafka_bootstrap)
        producer, _ = env_clients.kafka_producer(self.stack.kafka_bootstrap)
        es = env_clients.elasticsearch(self.stack.elasticsearch_url)
        try:
            self.outcome = index_messages(
                consumer,
                es,
                self.topic,
                self.alias,
                DeadLetters(producer, self.topic + ".dlq"),
                batch_size=50,
                until_caught_up=False,
                should_stop=self.stop.is_set,
            )
        except Exception as exc:  # noqa: BLE001 - the test asserts there was none
            self.error = exc
        finally:
            consumer.close()
            es.close()


class Poller(threading.Thread):
    """A shop's search: counts and searches through the alias as fast as it can, keeping every count and error."""

    def __init__(self, stack, alias):
        super().__init__(daemon=True)
        self.stack, self.alias = stack, alias
        self.stop, self.counts, self.errors = threading.Event(), [], []

    def run(self):
        es = env_clients.elasticsearch(self.stack.elasticsearch_url)
        while not self.stop.is_set():
            try:
                self.counts.append(es.count(index=self.alias)["count"])
                es.search(index=self.alias, query={"match": {"name": "lamp"}}, size=1)
            except Exception as exc:  # noqa: BLE001 - every error is a finding
                self.errors.append(repr(exc))
        es.close()


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_rebuild_while_products_are_published_and_indexed_swaps_with_no_search_error_and_no_drop(
    stack, es, topic, threads
):
    """The live indexer keeps indexing a publish through the alias while a new version is filled from the topic; the
    swap blocks the live index's writes for a moment (the live indexer retries into the new version), and a poller
    searching through the alias all along sees no error and never a smaller count. External versions (image days)
    still hold in the new version."""
    alias, group = f"shop-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    first = [product(i) for i in range(1200)]
    publish(stack, topic, first)
    live = LiveIndexer(stack, topic, alias, group)
    threads.append(live)
    live.start()
    wait_for(lambda: es.indices.exists(index=alias) and es.count(index=alias)["count"] == len(first))
    (old,) = versions(es, alias)  # the live indexer made the alias and its first version
    assert live_index(es, alias).index == old and is_version_of(alias, old)
    poller = Poller(stack, alias)
    threads.append(poller)
    poller.start()

    more = [product(i) for i in range(1200, 1800)]  # a publish while the rebuild fills its version
    publishing = threading.Thread(target=publish, args=(stack, topic, more))
    switch = switch_for(stack, es, topic)
    planned = plan(es, "rebuild", alias, topic, group)
    publishing.start()
    filled = switch.fill(planned)
    publishing.join()
    assert filled.consumed >= len(first)
    switch.fill(planned)  # what verify_version catches up first: the rest of the publish
    catalog = first + more
    wait_for(lambda: es.count(index=alias)["count"] == len(catalog))  # the live index has the publish too
    assert verify_version(es, planned.target, catalog)["verified"] == len(catalog)

    late = [product(i) for i in range(1800, 1850)]  # published just before the swap: the catch-up takes them
    publish(stack, topic, late)
    swapped = switch.swap(planned, keep=2, verified=planned.target)
    assert swapped["previous"] == old and swapped["index"] == planned.target
    assert not swapped["live_group_moved"]  # a live indexer is running: it goes on from its own position
    assert live_index(es, alias).index == planned.target
    wait_for(lambda: es.count(index=alias)["count"] == len(catalog) + len(late))

    # After the swap the live indexer writes into the new version; an older day's document never replaces a newer.
    publish(stack, topic, [product(7, day="2026-11-30"), product(9, day="2026-12-02")])
    wait_for(lambda: indexer_caught_up(stack.kafka_bootstrap, topic, group))  # both messages indexed
    assert es.get(index=planned.target, id="P-00009")["_source"]["image_date"] == "2026-12-02"
    assert es.get(index=planned.target, id="P-00007")["_source"]["image_date"] == "2026-12-01"  # superseded

    poller.stop.set()
    live.stop.set()
    poller.join(30)
    live.join(60)
    assert live.error is None and poller.errors == []
    assert len(poller.counts) > 20
    assert all(b >= a for a, b in zip(poller.counts, poller.counts[1:], strict=False)), (
        "the count through the alias dropped"
    )
    # The old version is kept for a rollback, writable again.
    settings = es.indices.get_settings(index=old)[old]["settings"]["index"]
    assert str(settings.get("blocks", {}).get("write", "false")).lower() == "false"


@pytest.mark.fault(
    "a rollback with no earlier version left",
    "refused before anything changes, naming the live version and PUBLISHER_INDEX_VERSIONS_KEPT",
)
def test_a_rollback_goes_back_to_the_version_before_caught_up_from_where_it_stopped(stack, es, topic, threads):
    alias, group = f"shop-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    publish(stack, topic, [product(i) for i in range(200)])
    switch = switch_for(stack, es, topic)
    live = LiveIndexer(stack, topic, alias, group)
    threads.append(live)
    live.start()
    wait_for(lambda: es.indices.exists(index=alias) and es.count(index=alias)["count"] == 200)
    old = live_index(es, alias).index
    with pytest.raises(PublisherError, match="no other version that searches read is left"):
        plan(es, "rollback", alias, topic, group)  # the alias's first version: nothing before it
    rebuilt = plan(es, "rebuild", alias, topic, group)
    switch.fill(rebuilt)
    switch.swap(rebuilt, keep=2, verified=rebuilt.target)

    publish(stack, topic, [product(i, price=1.5) for i in range(200, 250)])  # indexed into the new version only
    wait_for(lambda: es.count(index=alias)["count"] == 250)
    assert es.count(index=old)["count"] == 200

    back = plan(es, "rollback", alias, topic, group)
    assert back.target == old and back.previous == rebuilt.target and not back.created
    caught = switch.fill(back)
    assert caught.consumed == 50  # from the position recorded at the swap, not from the topic's start
    switch.swap(back, keep=2, verified=back.target)
    assert live_index(es, alias).index == old and es.count(index=alias)["count"] == 250
    live.stop.set()
    live.join(60)
    assert live.error is None

    # Rolled back, the version searches read before is the rebuilt one: a second rollback undoes the first.
    assert plan(es, "rollback", alias, topic, group).target == rebuilt.target


@pytest.mark.fault(
    "a rebuilt index that does not hold the catalog (a product missing, a document that differs), or a swap after "
    "another run moved the alias",
    "the verification fails naming the ids and counts, or the swap is refused; the alias stays where it was and the "
    "unswapped version is deleted",
)
def test_a_failed_verification_names_what_differs_and_a_swap_after_the_alias_moved_is_refused(stack, es, topic):
    alias, group = f"shop-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    catalog = [product(i) for i in range(100)]
    publish(stack, topic, catalog)
    switch = switch_for(stack, es, topic)
    planned = plan(es, "rebuild", alias, topic, group)  # nothing live yet: the first version is the rebuild's
    assert planned.previous is None
    switch.fill(planned)
    edited = [*catalog[:50], {**catalog[50], "name": "Renamed"}, *catalog[51:], product(100)]
    with pytest.raises(PublisherError) as failure:
        verify_version(es, planned.target, edited, sample=len(edited))
    assert f"verification of {planned.target} failed" in str(failure.value)
    assert "1 of 101 products missing" in str(failure.value)
    assert "1 of 101 sampled documents differ from their products (P-00050)" in str(failure.value)

    other = plan(es, "rebuild", alias, topic, group)
    switch.fill(other)
    switch.swap(other, keep=2, verified=other.target)
    with pytest.raises(PublisherError, match=f"moved to {other.target} while this run filled {planned.target}"):
        switch.swap(planned, keep=2, verified=planned.target)
    assert switch.discard(planned) and not es.indices.exists(index=planned.target)
    assert live_index(es, alias).index == other.target


@pytest.mark.fault(
    "the live index's writes blocked (a rebuild moving the alias)",
    "bulk items refused with 403 cluster_block_exception (an index-write block) are retried with backoff, never "
    "dead-lettered, and land once writes are allowed",
)
def test_the_live_indexer_retries_what_a_write_block_refuses_until_it_is_lifted(stack, es, topic):
    """What the swap relies on: a bulk item refused with 403 cluster_block_exception is retried, not
    dead-lettered, and lands once writes are allowed again."""
    from include.catalog_publisher.index_versions import ensure_alias, set_write_block

    alias = f"shop-{uuid.uuid4().hex[:6]}"
    ensure_alias(es, alias)
    blocked = live_index(es, alias).index
    set_write_block(es, blocked, True)
    publish(stack, topic, [product(i) for i in range(20)])
    threading.Timer(8.0, set_write_block, args=(es, blocked, False)).start()  # after the group join (~3 s)
    consumer, _ = env_clients.kafka_consumer(f"live-{uuid.uuid4().hex[:6]}", stack.kafka_bootstrap)
    producer, _ = env_clients.kafka_producer(stack.kafka_bootstrap)
    try:
        outcome = index_messages(consumer, es, topic, alias, DeadLetters(producer, topic + ".dlq"))
    finally:
        consumer.close()
    assert outcome.retried_items >= 20 and outcome.dead_lettered == 0
    assert outcome.indexed == 20 and es.count(index=alias)["count"] == 20


def test_the_first_rebuild_moves_a_concrete_index_behind_the_alias_and_the_dag_reports_each_step(published, stack, es):
    """As users meet it: an index made before aliases, with a drifted mapping, indexed by index_product_catalog;
    rebuild_product_index replaces it with a version that has the code's mapping; a rebuild checked against a
    catalog the topic does not hold fails and changes nothing; a second rebuild, then a rollback to the first.
    Every run's report says what happened."""
    from airflow.utils.session import create_session

    from devstack import local_airflow
    from include.catalog_publisher import run_report
    from include.catalog_publisher.catalog import read_products
    from include.catalog_publisher.indexer import mapping_drift
    from tests.helpers import write_catalog

    alias, group = f"legacy-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    es.indices.create(index=alias, mappings={"properties": {"price": {"type": "long"}}})
    catalog_file = published["run"].result("update_catalog")["catalog"]
    conf = {"topic": published["topic"], "index": alias, "group_id": group, "catalog_file": catalog_file}
    assert local_airflow.run_dag("index_product_catalog", conf).xcoms["verify_index"]["mapping_drift"]

    def report(run):
        with create_session() as session:
            facts = run_report.load_run(session, "rebuild_product_index", run.run_id)
        return run_report.render(run_report.rebuild_report(facts))

    first = local_airflow.run_dag("rebuild_product_index", conf)
    assert first.succeeded, first.task_states
    target = first.xcoms["plan"]["target"]
    assert first.xcoms["plan"]["concrete"] and live_index(es, alias) == live_index(es, alias).__class__(alias, target)
    products = list(read_products(catalog_file))
    assert first.xcoms["verify_version"]["verified"] == len(products) == es.count(index=alias)["count"]
    assert mapping_drift(es, alias) == []
    assert f"moved from <code>{alias}</code> to\n    <code>{target}</code>" in report(first)

    wrong = write_catalog(published["data"] / "with-an-unpublished-product.json", [*products, product(99999)])
    refused = local_airflow.run_dag("rebuild_product_index", {**conf, "catalog_file": str(wrong)})
    assert refused.task_states["verify_version"] == ["failed"] and refused.task_states["swap_alias"] != ["success"]
    assert live_index(es, alias).index == target
    discarded = refused.xcoms["discard_unswapped"]["discarded"]
    assert discarded and not es.indices.exists(index=discarded)
    assert "1 of" in report(refused) and "P-99999 missing" in report(refused)

    second = local_airflow.run_dag("rebuild_product_index", conf)
    assert second.succeeded and live_index(es, alias).index == second.xcoms["plan"]["target"] != target
    back = local_airflow.run_dag("rebuild_product_index", {**conf, "action": "rollback"})
    assert back.succeeded, back.task_states
    assert live_index(es, alias).index == target and es.count(index=alias)["count"] == len(products)
    assert "Rollback of" in report(back)


@pytest.mark.fault(
    "a swap asked for a version this run did not verify, a catch-up under the write block slower than its budget, "
    "or a swap tried again after it moved the alias",
    "the first two are refused before the alias moves, and the live index's writes are allowed again; the third "
    "only finishes up",
)
def test_a_swap_moves_only_a_verified_version_within_its_block_budget_and_a_retry_after_the_move_finishes_up(
    stack, es, topic, monkeypatch
):
    from include.catalog_publisher import reindex
    from include.catalog_publisher.errors import ServiceUnavailableError
    from include.catalog_publisher.index_versions import ensure_alias

    alias, group = f"shop-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    catalog = [product(i) for i in range(100)]
    publish(stack, topic, catalog)
    switch = switch_for(stack, es, topic)
    ensure_alias(es, alias)
    old = live_index(es, alias).index
    live_consumer = switch.consumer_for(group)  # the live indexer, one run: then no member is left in its group
    try:
        index_messages(live_consumer, es, topic, alias, switch.dead_letters)
    finally:
        live_consumer.close()
    planned = plan(es, "rebuild", alias, topic, group, run_id="manual__1")
    switch.fill(planned)
    replanned = plan(es, "rebuild", alias, topic, group, run_id="manual__1")  # its task cleared: the same version
    assert (replanned.target, replanned.previous, replanned.created) == (planned.target, old, True)

    with pytest.raises(PublisherError, match="was not verified in this run; nothing was swapped"):
        switch.swap(planned, keep=2, verified=None)
    monkeypatch.setattr(reindex, "BLOCK_BUDGET_S", 0.0)  # a catch-up slower than the budget, made so
    with pytest.raises(ServiceUnavailableError, match="the alias was not moved"):
        switch.swap(planned, keep=2, verified=planned.target)
    assert live_index(es, alias).index == old
    blocks = es.indices.get_settings(index=old)[old]["settings"]["index"].get("blocks", {})
    assert str(blocks.get("write", "false")).lower() == "false"  # the live index takes writes again

    monkeypatch.setattr(reindex, "BLOCK_BUDGET_S", 15.0)
    swapped = switch.swap(planned, keep=2, verified=planned.target)
    assert live_index(es, alias).index == planned.target
    # No live indexer was running: its group now stands where the new version does, so its next run reads nothing.
    ends = partition_ends(stack.kafka_bootstrap, topic)
    assert swapped["live_group_moved"] and committed_offsets(stack.kafka_bootstrap, group, topic, ends) == ends
    again = switch.swap(planned, keep=2, verified=planned.target)  # the task retried after the move
    assert again["index"] == planned.target and live_index(es, alias).index == planned.target


def test_a_rollback_goes_to_the_version_searches_read_last_and_old_versions_are_pruned(stack, es, topic):
    """A live; rebuild B; roll back to A; rebuild C; roll back: A again, not B (newer by name, rolled away from).
    Then a rebuild keeping one earlier version deletes the others."""
    alias, group = f"shop-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    publish(stack, topic, [product(i) for i in range(30)])
    switch = switch_for(stack, es, topic)

    def done(action):
        planned = plan(es, action, alias, topic, group)
        switch.fill(planned)
        switch.swap(planned, keep=5, verified=planned.target)
        return planned.target

    a = done("rebuild")
    b = done("rebuild")
    assert done("rollback") == a
    c = done("rebuild")
    assert b < c and done("rollback") == a
    assert list(versions(es, alias)) == [a, b, c]  # keep=5: nothing pruned yet

    d = plan(es, "rebuild", alias, topic, group)
    switch.fill(d)
    assert switch.swap(d, keep=1, verified=d.target)["deleted"] == [a, b]  # older than d, beyond the newest one
    assert list(versions(es, alias)) == [c, d.target]


@pytest.mark.fault(
    "the live index's writes blocked and never allowed again (a rebuild's worker killed under the block)",
    "the live indexer gives up after its retries, commits nothing, and its error names the blocked index and how "
    "to lift the block",
)
def test_a_write_block_nobody_lifts_fails_the_live_indexer_naming_the_index_and_the_fix(stack, es, topic):
    from include.catalog_publisher.errors import ServiceUnavailableError
    from include.catalog_publisher.index_versions import ensure_alias, set_write_block

    alias, group = f"shop-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    ensure_alias(es, alias)
    blocked = live_index(es, alias).index
    set_write_block(es, blocked, True)
    publish(stack, topic, [product(i) for i in range(5)])
    consumer, _ = env_clients.kafka_consumer(group, stack.kafka_bootstrap)
    producer, _ = env_clients.kafka_producer(stack.kafka_bootstrap)
    try:
        with pytest.raises(ServiceUnavailableError) as failure:  # the backoff's sleeps skipped: the same retries
            index_messages(consumer, es, topic, alias, DeadLetters(producer, topic + ".dlq"), sleep=lambda _: None)
    finally:
        consumer.close()
    assert f"refused by the write block on {blocked}" in str(failure.value)
    assert '"index.blocks.write": null' in str(failure.value) and "nothing of this batch was committed" in str(
        failure.value
    )
    ends = partition_ends(stack.kafka_bootstrap, topic)
    assert all(offset < 0 for offset in committed_offsets(stack.kafka_bootstrap, group, topic, ends).values())
