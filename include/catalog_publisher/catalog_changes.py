"""The DAG's publish: only what changed since the last publish, and a tombstone for each removed product.

Against the published state (published_state.py), a product is sent when its message differs from the live
one, and left alone when it is the same, or when the topic holds a newer day of its image (a backfill of an
older day never puts an older document back on the topic). A product that was published and is gone from the
catalog gets a tombstone (key, no value): the indexer deletes its document. The runbook's producer publishes
the whole file instead (kafka_publish.publish_products).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from include.catalog_publisher import published_state
from include.catalog_publisher.catalog import detect_format, read_products
from include.catalog_publisher.defaults import IMAGE_DATE_FIELD
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import files_sha256
from include.catalog_publisher.kafka_publish import check_topic, message_value, product_key, send_messages
from include.catalog_publisher.kafka_topics import cleanup_policy, topic_id
from include.catalog_publisher.published_state import PublishedState, message_digest

log = logging.getLogger(__name__)

_EXAMPLES = 5


@dataclass
class ChangeOutcome:
    """What a run sent (or, dry, would send): changed products, tombstones, and what it left alone."""

    topic: str
    published: int
    removed: int
    unchanged: int
    older_than_live: int
    seconds: float = 0.0
    dry_run: bool = False
    read_back: str = ""  # why the topic was read back instead of trusting the saved state ("": it was trusted)

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def state_reader(producer):
    """A consumer on the producer's brokers and credentials, to read the topic's offsets and messages (no commits).

    It reads to each partition's end and stops, so a fetch at the end waits 10 ms for more, not the default 500 ms
    (each read-back pays that wait once per fetch at the end)."""
    from confluent_kafka import Consumer

    config = {k: v for k, v in producer.client_config.items() if k not in ("error_cb",)}
    settings = {
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
    }
    return Consumer({**config, **settings, "group.id": "catalog-publisher-state"})


def publish_changes(
    producer,
    products: Iterable[tuple[Any, bytes]],
    topic: str,
    catalog_ids: set[str],
    saved: PublishedState | None,
    *,
    where: str,
    republish_all: bool = False,
    max_removals: int | None = None,
    dry_run: bool = False,
    catalog: str | None = None,
    accept_partition_change: bool = False,
    newest_days: Mapping[str, str] | None = None,
) -> tuple[ChangeOutcome, PublishedState]:
    """Publish the changed products and the tombstones; return what was done and the state to save. `products`:
    each product with its message value (catalog_messages, with_values); `catalog_ids`: every id of the catalog.
    `republish_all` sends every product again (a new index, a replay); tombstones still go. Fails before sending
    anything when more than `max_removals` products would be removed, or the topic gained partitions (unless
    `accept_partition_change`). `catalog` (catalog_digest): the catalog the state is settled with is not compared
    again. `newest_days`: a dated run's newest image day of each product (_changes)."""
    exists = check_topic(producer, topic, where, create=not dry_run)
    reader = state_reader(producer)
    try:
        state = _current_state(producer, reader, topic, saved, accept_partition_change, exists)
        if not republish_all and state.settled_on(catalog):
            return _settled_outcome(state, topic, dry_run), state
        removed = sorted(set(state.documents) - catalog_ids)
        _check_removals(removed, len(catalog_ids), max_removals)
        counts: Counter[str] = Counter()
        messages = _changes(producer, products, state, removed, counts, republish_all, newest_days)
        sent, elapsed, alone = _send(producer, reader, topic, messages, state, where, dry_run)
        if catalog and (alone or not sent):  # the topic holds this catalog, as a full comparison would find
            state.settled = _settled(catalog, counts, sent - len(removed))
    finally:
        reader.close()
    published, unchanged, older = sent - len(removed), counts["unchanged"], counts["older"]
    result = ChangeOutcome(topic, published, len(removed), unchanged, older, elapsed, dry_run, state.read_back)
    log.info("%s", _describe(result))
    return result, state


def _settled(catalog: str, counts: Counter, published: int) -> dict:
    """The topic holds `catalog` (nothing was to send, or what was sent is all the topic got since): the next run of
    this catalog need not compare it while the topic stays; for it, what was published now counts as unchanged."""
    return {"catalog": catalog, "unchanged": counts["unchanged"] + published, "older_than_live": counts["older"]}


def _send(producer, reader, topic: str, messages, state, where: str, dry_run: bool) -> tuple[int, float, bool]:
    """Send the messages (a dry run counts them), then fold what the topic holds since the state's ends into it.
    (Messages sent, seconds, whether the topic grew by exactly those: no other writer's message came in between.)"""
    if dry_run:
        return sum(1 for _ in messages), 0.0, False
    since = dict(state.ends)
    outcome = send_messages(producer, topic, messages, where)
    if not outcome.delivered:  # the state is still exactly what the topic held at `since`
        return 0, outcome.elapsed_s, True
    published_state.catch_up(state, reader, topic, since)
    grown = sum(end - since.get(partition, 0) for partition, end in state.ends.items())
    return outcome.delivered, outcome.elapsed_s, grown == outcome.delivered


def catalog_digest(catalog_file: str | os.PathLike, ids_file: str | os.PathLike) -> str:
    """A digest of a run's catalog and id list: what its messages and tombstones are computed from."""
    return files_sha256(catalog_file, ids_file)


def _settled_outcome(state: PublishedState, topic: str, dry_run: bool) -> ChangeOutcome:
    """What a run of the catalog the state is settled with does: nothing, with the counts its full comparison had."""
    settled = state.settled
    assert settled is not None  # publish_changes returns this only for the catalog the state is settled with
    result = ChangeOutcome(topic, 0, 0, settled["unchanged"], settled["older_than_live"], dry_run=dry_run)
    log.info("%s (the catalog last compared in full, and the topic has not moved since)", _describe(result))
    return result


def _current_state(producer, reader, topic: str, saved, accept: bool, exists: bool) -> PublishedState:
    """The saved state if the topic (the same topic, by its id) holds nothing after it, else the topic read back;
    empty for a topic a dry run found missing (every product would be new)."""
    if not exists:
        return PublishedState(topic)
    topic_now, untrusted = _topic_facts(producer, topic)
    return published_state.current(saved, reader, topic, topic_now, accept, untrusted)


def _topic_facts(producer, topic: str) -> tuple[str | None, str]:
    """(the topic's id, why no saved state can be trusted: records that expire, "" when none)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(producer.client_config)  # one client for both questions
    policy = cleanup_policy(producer.client_config, topic, admin)
    named = {None: "not known (DescribeConfigs refused)", "": "the broker's default (delete on Apache Kafka)"}
    untrusted = "" if policy == "compact" else f"its cleanup.policy is {named.get(policy, policy)}"
    if untrusted:  # records expire: the state may list products the topic no longer holds, to be sent again
        untrusted += ", so records expire and products the state lists may be gone from it"
    return topic_id(producer.client_config, topic, admin), untrusted


def already_published(
    producer,
    topic: str,
    saved: PublishedState | None,
    catalog: str,
    *,
    where: str,
    accept_partition_change: bool = False,
    dry_run: bool = False,
) -> ChangeOutcome | None:
    """What publish_changes would return for `catalog` (catalog_digest) without sending anything: its settled
    shortcut, the saved state settled on this catalog and the topic not moved since; None when publish_changes has
    to compare (or read back, or send). No Kafka call when the state is not settled on this catalog."""
    if saved is None or not saved.settled_on(catalog):
        return None
    if not check_topic(producer, topic, where, create=False):
        log.info("topic %s does not exist: the publish creates it", topic)
        return None
    reader = state_reader(producer)
    try:
        topic_now, untrusted = _topic_facts(producer, topic)
        if not published_state.trusted(saved, reader, topic, topic_now, accept_partition_change, untrusted):
            return None
    finally:
        reader.close()
    return _settled_outcome(saved, topic, dry_run)


def with_values(products: Iterable[Any]) -> Iterator[tuple[Any, bytes]]:
    """Each product with its message value."""
    return ((product, message_value(product)) for product in products)


def catalog_messages(catalog_file: str | os.PathLike, fmt: str | None = None) -> Iterator[tuple[Any, bytes]]:
    """Each product of a catalog rewrite_catalog wrote, with its message value. The rewrite writes an array or
    JSON Lines catalog one product a line, encoded as message_value encodes it: that line is the value, decoded
    for the product's id and day only, instead of parsing the catalog and encoding every product again (a
    third of a changed run's publish at 10,000 products). The object form is read and encoded. `fmt`: the format
    the rewrite wrote (its summary's); guessed from the file when not given."""
    fmt = fmt or detect_format(catalog_file)
    if fmt == "object":
        yield from with_values(read_products(catalog_file))
        return
    closed = fmt == "jsonl"
    with open(catalog_file, "rb") as lines:
        for number, line in enumerate(lines, 1):
            value = line.strip()
            closed = closed or value == b"]"
            if value in (b"", b"[", b"]"):
                continue
            value = value[:-1] if value.endswith(b",") else value  # the array's separator
            yield _decode_line(catalog_file, number, value), value
    if not closed:
        raise PublisherError(f"the run's catalog {catalog_file} ends before its array does; run update_catalog again")


_DECODE = msgspec.json.Decoder().decode


def _decode_line(catalog_file: str | os.PathLike, number: int, value: bytes) -> Any:
    """One product line of a rewritten catalog: msgspec, else json for what msgspec does not take (a huge integer,
    the Infinity json writes)."""
    with contextlib.suppress(msgspec.DecodeError):
        return _DECODE(value)
    try:
        return json.loads(value)
    except ValueError:  # not JSON, or not UTF-8
        raise PublisherError(
            f"the run's catalog {catalog_file} line {number} is not valid JSON; run update_catalog again"
        ) from None


def _changes(
    producer,
    products: Iterable[tuple[Any, bytes]],
    state: PublishedState,
    removed: list[str],
    counts: Counter,
    republish_all: bool,
    newest_days: Mapping[str, str] | None = None,
) -> Iterator[tuple]:
    """The messages to send: the products that differ from the live ones, then the tombstones. (What is recorded
    in `state` here only orders duplicates; after sending, catch_up records what the topic holds.) A product whose
    image day is older than its live one, or than the newest uploaded (`newest_days`, a dated run's), is left alone;
    so is, in a dated run, a product without an image whose live document has one (dated images never go away
    while their product is in the catalog: the run's catalog is behind)."""
    for number, (product, value) in enumerate(products, 1):
        pid = product_key(producer, product, number)
        day = product.get(IMAGE_DATE_FIELD)
        live_day = state.days.get(pid)
        dated, newest = newest_days is not None, (newest_days or {}).get(pid)
        if (
            (day and live_day and live_day > day)
            or (newest and (not day or newest > day))
            or (dated and live_day and not day)
        ):
            counts["older"] += 1
            continue
        digest = message_digest(value)
        if not republish_all and state.documents.get(pid) == digest:
            counts["unchanged"] += 1
            continue
        state.documents[pid] = digest  # a later copy of a duplicated id is compared with this one: the last wins
        yield pid, value
    for pid in removed:  # with the removed document's image day: the indexer deletes that version (indexer.py)
        day = state.days.get(pid)
        yield (pid, None, [(IMAGE_DATE_FIELD, day.encode())]) if day else (pid, None)


def _check_removals(removed: list[str], catalog_size: int, max_removals: int | None) -> None:
    """Refuse to empty the topic from an empty catalog, or to remove more products than allowed, before any send."""
    if not removed:
        return
    examples = ", ".join(removed[:_EXAMPLES])
    if catalog_size == 0:
        raise PublisherError(
            f"the catalog has no products: publishing it would remove all {len(removed)} published products "
            f"(e.g. {examples}); check the catalog file. Nothing was sent to Kafka"
        )
    if max_removals is not None and len(removed) > max_removals:
        raise PublisherError(
            f"{len(removed)} published products are no longer in the catalog (e.g. {examples}), more than "
            f"max_deletions {max_removals}; if they were meant to go, run again with a higher max_deletions. "
            "Nothing was sent to Kafka"
        )
    log.info("%d products are no longer in the catalog and get a tombstone (e.g. %s)", len(removed), examples)


def _describe(result: ChangeOutcome) -> str:
    verb = "would publish" if result.dry_run else "published"
    return (
        f"topic {result.topic}: {verb} {result.published} changed products and {result.removed} tombstones; "
        f"{result.unchanged} unchanged, {result.older_than_live} older than the live day left alone"
    )
