"""What the publisher last published to a topic: each product's id, the digest of its message and its image day.

Why: with it a run publishes only the products whose message changed, and a tombstone for each product it
published before that is gone from the catalog, so the topic and the index converge to the catalog with work
proportional to the change.

The state is a cache of the topic, never the truth. It is trusted only while the topic holds nothing after the end
offsets it recorded right after its publish; when it is missing, corrupt, for another topic, or outdated (someone else
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.files import atomic_output

log = logging.getLogger(__name__)

FORMAT = "catalog-publisher/published-state"
VERSION = 1
READ_TIMEOUT_S = 600.0  # reading a topic back when the state cannot be trusted
CHECK_TIMEOUT_S = 15.0  # telling whether the saved state is current; past it, the topic is read back
SETTLED_COUNTS = ("unchanged", "older_than_live")  # what a settled catalog's run counted (its products, none sent)


def message_digest(value: bytes) -> str:
    """A short digest of a message's value: equal digests, equal published documents."""
    return hashlib.blake2b(value, digest_size=12).hexdigest()


@dataclass
class PublishedState:
    """documents: product id -> digest of its live message; days: product id -> image_date, where it has one;
    ends: partition -> the topic's end offset when the state was saved (what says it is still current);
    topic_id: the topic's id then (None where the broker did not tell), so a topic created again is seen;
    settled: the catalog (its digest) a run compared in full with these documents and found nothing to send for,
    with that run's counts: the same catalog has nothing to send while the state is current (None: unknown);
    starts: partition -> the topic's first offset then (records removed from the start, by time retention or
    DeleteRecords, move it: products no longer on the topic); read_back: why this run read the topic back (not
    kept: what the run reports)."""

    topic: str
    documents: dict[str, str] = field(default_factory=dict)
    days: dict[str, str] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    topic_id: str | None = None
    settled: dict[str, Any] | None = None
    starts: dict[int, int] | None = None
    read_back: str = ""

    def settled_on(self, catalog: str | None) -> bool:
        """Whether a run found this catalog (catalog_digest) to be what the topic holds, and nothing changed since."""
        return catalog is not None and (self.settled or {}).get("catalog") == catalog

    def record(self, pid: str, value: bytes | None, day: str | None = None) -> None:
        """What the topic holds for pid after `value` was published (None: a tombstone)."""
        self.settled = None  # the documents change: no catalog is known to match them in full any more
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
        topic_id = data.get("topic_id")  # absent from states saved before topic ids were kept
        if not (topic_id is None or isinstance(topic_id, str)):
            raise ValueError("topic_id is not a string")
        settled = _settled_field(data.get("settled"))  # absent from states saved before it was kept
        starts = data.get("starts")  # absent from states saved before it was kept: not trusted (read back once)
        starts = {int(p): int(o) for p, o in starts.items()} if starts is not None else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the published state %s (%s); the topic is read back instead", path, exc)
        return None
    return PublishedState(topic, documents, days, ends, topic_id, settled, starts)


def _settled_field(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not (isinstance(value["catalog"], str) and all(isinstance(value[k], int) for k in SETTLED_COUNTS)):
        raise ValueError("settled is not a catalog digest with its counts")
    return {"catalog": value["catalog"], **{k: value[k] for k in SETTLED_COUNTS}}


def save(path: str | os.PathLike, state: PublishedState) -> None:
    """Write the state atomically (compact: it holds one line per published product)."""
    data = {"format": FORMAT, "version": VERSION, "topic": state.topic, "topic_id": state.topic_id, "ends": state.ends}
    data["settled"], data["starts"] = state.settled, state.starts
    with atomic_output(path) as out:
        json.dump({**data, "documents": state.documents, "days": state.days}, out, ensure_ascii=False)
        out.write("\n")


def current(
    saved: PublishedState | None,
    consumer,
    topic: str,
    topic_id: str | None = None,
    accept_partition_change: bool = False,
    untrusted: str = "",
) -> PublishedState:
    """The saved state if the topic (`topic_id` now) has not moved since it was saved, else the state read back
    (`untrusted`: a reason the caller found not to trust any saved state, e.g. records that expire). Refused,
    before anything is sent, when the same topic has gained partitions since (unless accepted)."""
    partitions, starts, reason = _judged(saved, consumer, topic, topic_id, accept_partition_change, untrusted)
    if saved is not None and not reason:
        saved.topic_id = saved.topic_id or topic_id  # a state saved before topic ids were kept
        saved.read_back = ""  # trusted this run
        return saved
    if saved is not None:
        log.warning("the published state of topic %s is not trusted (%s): reading the topic back", topic, reason)
    state = PublishedState(topic, topic_id=topic_id, starts=starts, read_back=reason or "no saved state")
    state.ends = read_back(state, consumer, topic, dict.fromkeys(partitions))
    return state


def trusted(
    saved: PublishedState | None,
    consumer,
    topic: str,
    topic_id: str | None = None,
    accept_partition_change: bool = False,
    untrusted: str = "",
) -> bool:
    """Whether `current` would take the saved state as it is (nothing read back): the same checks, no reading."""
    if saved is None:
        return False
    reason = _judged(saved, consumer, topic, topic_id, accept_partition_change, untrusted)[2]
    if reason:
        log.info("the published state of topic %s cannot be taken as it is (%s)", topic, reason)
    return not reason


def _judged(saved, consumer, topic: str, topic_id, accept: bool, untrusted: str) -> tuple[list[int], dict, str]:
    """(the topic's partitions, their first offsets, why the saved state is not trusted: "" when it is)."""
    partitions = _partitions(consumer, topic)
    starts = _starts(consumer, topic, partitions)
    recreated = saved is not None and _recreated(saved, topic_id)
    added = saved is not None and not recreated and bool(saved.ends) and bool(set(partitions) - set(saved.ends))
    if added:  # whatever else makes the state untrusted: the refusal comes first
        _partitions_added(topic, len(saved.ends), len(partitions), accept)
    return partitions, starts, untrusted or _distrust(saved, consumer, topic, recreated, added, partitions, starts)


def _distrust(saved, consumer, topic: str, recreated: bool, added: bool, partitions: list[int], starts) -> str:
    """Why the saved state cannot be trusted ("" when it can)."""
    if saved is None:
        return "no saved state"
    if recreated:
        return "the topic was deleted and created again"
    if added:
        return "the topic gained partitions"
    if saved.starts is None:
        return "the state does not say where the topic started (saved by an older version)"
    trimmed = {p: o for p, o in starts.items() if o > saved.starts.get(p, 0)}
    if trimmed:
        return (
            f"records were removed from the start of the topic (partition offsets now start at {trimmed}): "
            "by time retention or DeleteRecords, so products the state lists may be gone from it"
        )
    if _moved(saved, consumer, topic, partitions):
        return "the topic was written since the state was saved"
    return ""


def _starts(consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """partition -> the topic's first offset (its low watermark)."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[0] for p in partitions}
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read the offsets of topic '{topic}' ({exc})") from None


def catch_up(state: PublishedState, consumer, topic: str, since: dict[int, int]) -> None:
    """Fold into `state` every message written to the topic from `since` on (the run's own, and any other
    writer's), so the saved state is what the topic holds up to its ends, whoever else published meanwhile."""
    starts = {p: since.get(p) for p in _partitions(consumer, topic)}
    state.ends = read_back(state, consumer, topic, starts)


def _recreated(saved: PublishedState, topic_id: str | None) -> bool:
    """Whether the topic was deleted and created again since the state was saved (its id changed): refilled to
    exactly the saved ends, its offsets alone would not tell."""
    if saved.topic_id and topic_id and saved.topic_id != topic_id:
        log.warning(
            "topic %s was deleted and created again since the published state was saved; reading it back", saved.topic
        )
        return True
    return False


def _partitions_added(topic: str, before: int, now: int, accepted: bool) -> None:
    """A topic that gained partitions keys a product to another partition than its live message's: its new message
    or tombstone would not replace that one, and a replay into a new index brings the old one back. Refused unless
    accepted (then the topic is read back and the run goes on)."""
    what = f"topic {topic} has {now} partitions, {before} when the last publish saved its state"
    if not accepted:
        raise PublisherError(
            f"{what}: products already on it may now hash to another partition, so their next message or tombstone "
            "would land beside, not over, their live one, and a replay would bring removed products back. Nothing "
            "was sent. Publish the catalog into a new topic (the topic param, with republish_all), or run once with "
            "accept_partition_change if the added partitions are what you want"
        )
    log.warning("%s; accepted (accept_partition_change): reading the topic back", what)


def _moved(saved: PublishedState, consumer, topic: str, partitions: list[int]) -> bool:
    """Whether anything was written to the topic after `saved.ends`, or its partitions or their ends differ (a topic
    deleted and recreated, unless refilled to exactly the saved ends; _recreated sees that case)."""
    if set(partitions) != set(saved.ends) or not _ends_at(consumer, topic, saved.ends):
        log.warning("topic %s was written since the published state was saved; reading it back", topic)
        return True
    return False


def _ends_at(consumer, topic: str, ends: dict[int, int]) -> bool:
    """Whether each partition ends exactly at `ends`: read from there, partition-EOF comes at once, at that offset.

    A partition now shorter (the topic recreated) gets no EOF from Tansu, only its end in the fetch's high
    watermark; and whatever cannot be told within CHECK_TIMEOUT_S counts as moved (the topic is read back)."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer.assign([TopicPartition(topic, p, offset) for p, offset in ends.items()])
    try:
        pending, deadline = set(ends), time.monotonic() + CHECK_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None:
                if not msg.error():
                    return False  # a message after the saved end
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise ServiceUnavailableError(f"cannot read topic '{topic}' ({msg.error().str()})")
                if msg.offset() != ends[msg.partition()]:
                    return False
                pending.discard(msg.partition())
            fetched_ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1] for p in pending
            }
            if any(0 <= end < ends[p] for p, end in fetched_ends.items()):
                return False  # shorter than when the state was saved
        return not pending
    finally:
        consumer.unassign()


def read_back(state: PublishedState, consumer, topic: str, starts: Mapping[int, int | None]) -> dict[int, int]:
    """Record in `state` the messages of each partition from its offset in `starts` (None: its start) to its end,
    in order (the last message of each key wins, as on the topic); return those ends.

    The end is the fetch's high watermark, reached when the partition-EOF event comes; not ListOffsets, which
    Tansu answers from its newest batch object by modification time, to the second: short of the end, and stale
    after two writes within one second."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    started, ends, count = time.monotonic(), {}, 0
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING if at is None else at) for p, at in starts.items()])
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read topic '{topic}' back ({exc})") from None
    try:
        while len(ends) < len(starts):
            if time.monotonic() - started > READ_TIMEOUT_S:
                raise ServiceUnavailableError(
                    f"reading topic '{topic}' back took over {READ_TIMEOUT_S:.0f}s; run again"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise ServiceUnavailableError(f"cannot read topic '{topic}' back ({msg.error().str()})")
                ends[msg.partition()] = msg.offset()
                continue
            count += 1
            if msg.partition() in ends:  # written after its end was reached: the end moves with what is read
                ends[msg.partition()] = msg.offset() + 1
            if msg.key() is not None:
                state.record(msg.key().decode("utf-8", "replace"), msg.value(), _day_of(msg.value()))
    finally:
        consumer.unassign()
    elapsed = time.monotonic() - started
    log.info("read %d messages of topic %s back (%.1fs); %d live products", count, topic, elapsed, len(state.documents))
    return dict(sorted(ends.items()))


def _partitions(consumer, topic: str) -> list[int]:
    from confluent_kafka import KafkaException

    try:
        return sorted(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read the partitions of topic '{topic}' ({exc})") from None


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
