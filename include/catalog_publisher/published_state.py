"""What the publisher last published to a topic: each product's id, the digest of its message and its image day.

Why: with it a run publishes only the products whose message changed, and a tombstone for each product it
published before that is gone from the catalog, so the topic and the index converge to the catalog with work
proportional to the change.

The state is a cache of the topic, never the truth. It is trusted only while the topic's end offsets are the ones
it recorded right after its publish; when it is missing, corrupt, for another topic, or outdated (someone else
published since, the topic was recreated, a run was killed between its publish and saving the state) it is
rebuilt by reading the topic from the start: a slower run, never a wrong one. It is saved only after the broker
confirmed every message of the run. Runs of the DAG publish one at a time (the task's max_active_tis_per_dag).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from include.catalog_publisher.errors import ServiceUnavailableError
from include.catalog_publisher.files import atomic_output

log = logging.getLogger(__name__)

FORMAT = "catalog-publisher/published-state"
VERSION = 1
READ_TIMEOUT_S = 600.0  # reading a topic back when the state cannot be trusted


def message_digest(value: bytes) -> str:
    """A short digest of a message's value: equal digests, equal published documents."""
    return hashlib.blake2b(value, digest_size=12).hexdigest()


@dataclass
class PublishedState:
    """documents: product id -> digest of its live message; days: product id -> image_date, where it has one;
    ends: partition -> the topic's end offset when the state was saved (what says it is still current)."""

    topic: str
    documents: dict[str, str] = field(default_factory=dict)
    days: dict[str, str] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)

    def record(self, pid: str, value: bytes | None, day: str | None = None) -> None:
        """What the topic holds for pid after `value` was published (None: a tombstone)."""
        self.days.pop(pid, None)
        if value is None:
            self.documents.pop(pid, None)
            return
        self.documents[pid] = message_digest(value)
        if day:
            self.days[pid] = day


def load(path: str | os.PathLike | None, topic: str) -> PublishedState | None:
    """The saved state of `topic`, or None (with a warning saying why) when there is none it can trust."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} {FORMAT} file")
        if data.get("topic") != topic:
            raise ValueError(f"it is the state of topic {data.get('topic')!r}")
        documents, days = data["documents"], data["days"]
        ends = {int(p): int(o) for p, o in data["ends"].items()}
        if not (isinstance(documents, dict) and isinstance(days, dict)):
            raise ValueError("documents and days are not objects")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the published state %s (%s); the topic is read back instead", path, exc)
        return None
    return PublishedState(topic, documents, days, ends)


def save(path: str | os.PathLike, state: PublishedState) -> None:
    """Write the state atomically (compact: it holds one line per published product)."""
    data = {"format": FORMAT, "version": VERSION, "topic": state.topic, "ends": state.ends}
    with atomic_output(path) as out:
        json.dump({**data, "documents": state.documents, "days": state.days}, out, ensure_ascii=False)
        out.write("\n")


def topic_ends(consumer, topic: str) -> dict[int, int]:
    """Each partition's end offset as the broker reports it (ListOffsets): it moves whenever anything is written."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False)[1]
            for p in sorted(partitions)
        }
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read the end offsets of topic '{topic}' ({exc})") from None


def current(saved: PublishedState | None, consumer, topic: str) -> PublishedState:
    """The saved state if the topic has not moved since it was saved, else the state read back from the topic."""
    ends = topic_ends(consumer, topic)
    if saved is not None and saved.ends == ends:
        return saved
    if saved is not None and set(ends) - set(saved.ends) and saved.ends:
        log.error(
            "topic %s has more partitions than when the state was saved: a product may now have messages in two "
            "partitions, which no consumer orders. Recreate the topic and publish with republish_all",
            topic,
        )
    elif saved is not None:
        log.warning("topic %s was written since the published state was saved; reading it back", topic)
    state = PublishedState(topic)
    read_back(state, consumer, topic)
    state.ends = ends  # taken before reading: the state holds at least everything up to them
    return state


def catch_up(state: PublishedState, consumer, topic: str, since: dict[int, int]) -> None:
    """Fold into `state` every message written to the topic from `since` on (the run's own, and any other
    writer's), so the saved state is what the topic holds, whoever else published meanwhile."""
    ends = topic_ends(consumer, topic)
    read_back(state, consumer, topic, since)
    state.ends = ends


def read_back(state: PublishedState, consumer, topic: str, since: dict[int, int] | None = None) -> None:
    """Record in `state` the messages of every partition from `since` (default: the start) to its end, in order:
    the last message of each key wins, as on the topic."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    started = time.monotonic()
    since = since or {}
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, since.get(p, OFFSET_BEGINNING)) for p in partitions])
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read topic '{topic}' back ({exc})") from None
    pending, count = set(partitions), 0
    while pending:
        if time.monotonic() - started > READ_TIMEOUT_S:
            raise ServiceUnavailableError(f"reading topic '{topic}' back took over {READ_TIMEOUT_S:.0f}s; run again")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                raise ServiceUnavailableError(f"cannot read topic '{topic}' back ({msg.error().str()})")
            pending.discard(msg.partition())
            continue
        count += 1
        if msg.key() is not None:
            state.record(msg.key().decode("utf-8", "replace"), msg.value(), _day_of(msg.value()))
    consumer.unassign()
    elapsed = time.monotonic() - started
    log.info("read %d messages of topic %s back (%.1fs); %d live products", count, topic, elapsed, len(state.documents))


def _day_of(value: bytes | None) -> str | None:
    """The image_date a published product carries, if any."""
    from include.catalog_publisher.defaults import IMAGE_DATE_FIELD

    if value is None:
        return None
    try:
        document: Any = json.loads(value)
    except ValueError:
        return None
    day = document.get(IMAGE_DATE_FIELD) if isinstance(document, dict) else None
    return day if isinstance(day, str) else None
