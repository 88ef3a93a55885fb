"""Step 7: index product messages from Kafka into Elasticsearch (runbook: product_consumer.py;
DAG: index_product_catalog).

At-least-once, to the standard of the Kafka Connect Elasticsearch sink connector:
- document id = product id (the message key, else the value's product_id), written with the bulk
  `index` action, which creates or replaces: a redelivered message never duplicates a document;
- a null value (tombstone) deletes the document;
- items answered with 429 or 5xx are retried with exponential backoff; messages that are not a JSON
  object, and documents Elasticsearch refuses (a mapping conflict, say), go to the dead-letter topic
  with their error in the headers, never silently dropped;
- offsets are committed only after Elasticsearch accepted every item of the batch and the
  dead-letter topic confirmed its messages, so a crash at any point loses nothing.

Several consumers of one group (the DAG's mapped consumers) share a topic's partitions: each indexes
and commits only the partitions it holds, drops what it fetched for a partition taken from it in a
rebalance (the new holder re-reads it from the last commit), and keeps a commit the rebalance refused
until it goes through or the partition moves on.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from include.catalog_publisher import defaults
from include.catalog_publisher.catalog import product_id
from include.catalog_publisher.date_folders import DATE_FOLDER
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.index_versions import INDEX_MAPPING, ensure_alias
from include.catalog_publisher.progress import Progress

log = logging.getLogger(__name__)

# Settings every indexing consumer runs with, whatever the connection adds.
CONSUMER_SETTINGS = {
    "enable.auto.commit": False,  # commits follow Elasticsearch's acceptance, never a timer
    "auto.offset.reset": "earliest",
    "enable.partition.eof": True,  # how "caught up" is seen
    "allow.auto.create.topics": False,
    # Group joins on Tansu wait about half of this; 6 s is also Kafka's minimum session timeout.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 2000,
}
BULK_RETRIES = 6
ASSIGNMENT_TIMEOUT_S = 60.0


@dataclass
class IndexOutcome:
    consumed: int = 0
    indexed: int = 0
    deleted: int = 0
    dead_lettered: int = 0
    superseded: int = 0  # older than the indexed version of their product (image_date): left as they were
    batches: int = 0
    retried_items: int = 0
    elapsed_s: float = 0.0
    assignments: int = 0  # partition assignments this consumer received (more than 1: rebalances)
    partitions: list[int] = field(default_factory=list)  # the partitions it committed offsets for
    dead_letter_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result.pop("dead_letter_examples")
        return result


def ensure_index(es, index: str) -> bool:
    """Make `index` (an alias, with its first version behind it) when nothing of that name exists; True if made."""
    return ensure_alias(es, index)


# What fixes a drifted mapping: Elasticsearch cannot change an existing field's mapping in place.
MAPPING_FIX = (
    "searches on those fields follow the index's mapping until it is rebuilt: trigger rebuild_product_index for "
    "this index (a new version with the code's mapping, filled from the topic beside the live one, then swapped in)"
)


def mapping_drift(es, index: str) -> list[str]:
    """How the live index's mapping differs from INDEX_MAPPING, one line per field ("price: double in the code,
    long in products-1"); [] when they agree. Elasticsearch cannot change a field's mapping in place, so a
    difference stays until the index is rebuilt; fields the catalog added later (mapped dynamically) are no drift."""
    answer = es.indices.get_mapping(index=index)
    drift: list[str] = []
    for name, live in sorted(dict(answer).items()):  # one entry per index behind an alias
        mapped = live.get("mappings", {})
        if str(mapped.get("dynamic", True)).lower() != str(INDEX_MAPPING["dynamic"]).lower():
            drift.append(f"dynamic: {INDEX_MAPPING['dynamic']} in the code, {mapped.get('dynamic')} in {name}")
        fields = mapped.get("properties", {})
        for field_name, wanted in INDEX_MAPPING["properties"].items():
            if field_name not in fields:
                drift.append(f"{field_name}: {_described(wanted)} in the code, not mapped in {name}")
            elif not _agrees(wanted, fields[field_name]):
                live_field = _described(fields[field_name])
                drift.append(f"{field_name}: {_described(wanted)} in the code, {live_field} in {name}")
    return drift


def _agrees(wanted: dict[str, Any], live: dict[str, Any]) -> bool:
    """Whether a live field mapping has every setting the code's has (its sub-fields compared the same way)."""
    for key, value in wanted.items():
        if key == "fields":
            if not all(sub in live.get("fields", {}) and _agrees(v, live["fields"][sub]) for sub, v in value.items()):
                return False
        elif str(live.get(key)).lower() != str(value).lower():
            return False
    return True


def _described(mapping: dict[str, Any]) -> str:
    """A field mapping in a few words: its type, and its sub-fields' ("text (keyword: keyword)")."""
    subs = ", ".join(f"{name}: {sub.get('type')}" for name, sub in mapping.get("fields", {}).items())
    return f"{mapping.get('type', 'object')}" + (f" ({subs})" if subs else "")


class DeadLetters:
    """The dead-letter topic: each refused message with its error, source topic, partition and offset."""

    def __init__(self, producer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    def ensure(self) -> None:
        """Create the topic when missing, before any message could need it (a fresh broker has none)."""
        from include.catalog_publisher.kafka_publish import check_topic
        from include.catalog_publisher.kafka_topics import TopicSettings

        check_topic(self.producer, self.topic, "the configured brokers", TopicSettings.dead_letters())

    def send(self, failed: list[tuple[Any, str]]) -> None:
        """Produce (message, reason) pairs and wait until every one is confirmed; raise otherwise."""
        if not failed:
            return
        errors: list[str] = []

        def on_delivery(err, msg) -> None:
            if err is not None:
                errors.append(err.str())

        for message, reason in failed:
            headers = [
                ("error", reason.encode("utf-8")),
                ("source.topic", message.topic().encode()),
                ("source.partition", str(message.partition()).encode()),
                ("source.offset", str(message.offset()).encode()),
            ]
            self.producer.produce(
                self.topic, key=message.key(), value=message.value(), headers=headers, on_delivery=on_delivery
            )
        remaining = self.producer.flush(60)
        if remaining or errors:
            raise ServiceUnavailableError(
                f"the dead-letter topic '{self.topic}' did not confirm {remaining or len(errors)} messages "
                f"({'; '.join(errors[:3])}); "
                "nothing was committed, the batch will be retried"
            )


def _actions(messages: list[Any], index: str) -> tuple[list[tuple[dict, Any, Any]], list[tuple[Any, str]]]:
    """Bulk (action, document, message) triples, and (message, reason) for what cannot be indexed."""
    actions: list[tuple[dict, Any, Any]] = []
    refused: list[tuple[Any, str]] = []
    for message in messages:
        key = message.key().decode("utf-8", "replace") if message.key() else None
        if message.value() is None:
            if key:
                action = {"_index": index, "_id": key, **version_of(dict(message.headers() or []))}
                actions.append(({"delete": action}, None, message))
            else:
                refused.append((message, "tombstone without a key: no document to delete"))
            continue
        try:
            document = json.loads(message.value())
        except (ValueError, UnicodeDecodeError) as exc:
            refused.append((message, f"value is not JSON: {exc}"))
            continue
        if not isinstance(document, dict):
            refused.append((message, f"value is JSON {type(document).__name__}, not a product object"))
            continue
        doc_id = key or product_id(document)
        if not doc_id:
            refused.append((message, "no key and no product_id/id in the value: cannot choose a document id"))
            continue
        # The message's own bytes go to the bulk body (no second encoding) unless a line break in
        # them would split the NDJSON line; then the parsed document is encoded again.
        raw = message.value()
        action = {"_index": index, "_id": doc_id, **version_of(document)}
        actions.append(({"index": action}, document if b"\n" in raw or b"\r" in raw else raw, message))
    return actions, refused


def version_of(document: dict) -> dict[str, Any]:
    """A product published from a date folder carries `image_date`: its document is indexed with that day as
    an external version (YYYYMMDD, `external_gte`), so an older day's document, from a backfill or a replay,
    never replaces a newer one, and the same day's replaces itself. Without it, Elasticsearch's own versions.
    A tombstone carries the removed document's day in a header: deleted at that version, not one above it, so
    the product re-added with the same image is indexed again (Elasticsearch keeps a deleted document's
    version for index.gc_deletes, 60 s by default)."""
    day = document.get(defaults.IMAGE_DATE_FIELD)
    day = day.decode("utf-8", "replace") if isinstance(day, bytes) else day
    if not isinstance(day, str) or not DATE_FOLDER.match(day):
        return {}
    return {"version": int(day.replace("-", "")), "version_type": "external_gte"}


def _bulk(
    es, pending: list[tuple[dict, Any, Any]], outcome: IndexOutcome, sleep: Callable[[float], None]
) -> list[tuple[Any, str]]:
    """Send the actions until each is accepted or refused for good; return the refused ones."""
    refused: list[tuple[Any, str]] = []
    for attempt in range(BULK_RETRIES + 1):
        retry, reason = _send_bulk(es, pending, outcome, refused)
        if not retry:
            return refused
        if attempt == BULK_RETRIES:
            raise ServiceUnavailableError(
                f"Elasticsearch did not accept {len(retry)} documents after {BULK_RETRIES} retries ({reason}); "
                "nothing of this batch was committed, so the next run indexes it again"
            )
        outcome.retried_items += len(retry)
        delay = min(0.5 * 2**attempt, 30.0)
        log.warning("bulk: %s; retrying %d items in %.1fs", reason, len(retry), delay)
        sleep(delay)
        pending = retry
    return refused


def _send_bulk(
    es, pending: list[tuple[dict, Any, Any]], outcome: IndexOutcome, refused: list[tuple[Any, str]]
) -> tuple[list, str]:
    """One bulk request: (the actions to send again, why). A refusal of the whole request that
    retrying cannot fix (400, 403, ...) is the user's to fix."""
    from elasticsearch import ApiError, TransportError

    body: list[Any] = []
    for action, document, _ in pending:
        body.append(action)
        if document is not None:
            body.append(document)
    try:
        response = es.bulk(operations=body)
    except ApiError as exc:  # the whole request was answered with an error
        if exc.status_code != 429 and exc.status_code < 500:
            raise PublisherError(
                f"Elasticsearch refused the bulk request: {exc.message}; check the index and the user's privileges"
            ) from None
        return pending, f"HTTP {exc.status_code}"
    except TransportError as exc:  # no answer at all
        return pending, f"{type(exc).__name__}: {exc}"
    retry = _sort_items(pending, response["items"], outcome, refused)
    return retry, _retry_reason(response["items"], len(retry))


def _retry_reason(items: list[dict], retried: int) -> str:
    """Why items are sent again; a write block is named with its index and how to lift one nobody lifts."""
    results = [result for item in items for result in item.values()]
    blocked = sorted({_blocked_index(result) for result in results if _write_blocked(result)})
    if not blocked:
        return f"{retried} items answered 429/5xx"
    return (
        f"{retried} items answered 429/5xx or refused by the write block on {', '.join(blocked)} (a rebuild moving the "
        "alias lifts it within seconds; one left by a killed rebuild is lifted by its run's discard_unswapped task, "
        'or by hand: PUT <index>/_settings {"index.blocks.write": null})'
    )


def _blocked_index(result: dict) -> str:
    """The index a write block refused: named in the error ("index [products-...] blocked by ..."), else the item's."""
    named = re.search(r"index \[([^\]]+)\]", str(result.get("error", {}).get("reason", "")))
    return named.group(1) if named else str(result.get("_index", "?"))


def _write_blocked(result: dict) -> bool:
    """A 403 for an index whose writes are blocked: a rebuild is moving the alias, and the retry lands in the
    index it points at next."""
    error = result.get("error", {})
    return (
        result.get("status") == 403
        and error.get("type") == "cluster_block_exception"
        and "index write" in str(error.get("reason", ""))  # not a read-only or disk-full block: those are refused
    )


def _sort_items(
    pending: list[tuple[dict, Any, Any]], items: list[dict], outcome: IndexOutcome, refused: list[tuple[Any, str]]
) -> list:
    """Count what was accepted, add what was refused for good to `refused`, return what to retry."""
    retry = []
    for triple, item in zip(pending, items, strict=True):
        operation, result = next(iter(item.items()))
        status = result.get("status", 500)
        if status < 300 or (operation == "delete" and status == 404):  # a delete of nothing is done too
            if operation == "delete":
                outcome.deleted += 1
            else:
                outcome.indexed += 1
        elif status == 429 or status >= 500 or _write_blocked(result):
            retry.append(triple)
        elif status == 409 and "version" in (triple[0].get("index") or triple[0].get("delete") or {}):
            outcome.superseded += 1  # the index holds a newer day of this product: nothing to do
        else:
            error = result.get("error", {})
            refused.append(
                (
                    triple[2],
                    f"Elasticsearch refused the document ({status} {error.get('type', '?')}: "
                    f"{error.get('reason', '')})",
                )
            )
    return retry


# Commit errors that only say the group is rebalancing: the batch stays indexed, its commit waits.
_REBALANCE_ERRORS = ("REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "FENCED_INSTANCE_ID")


class _CatchUp:
    """Which assigned partitions have reached the end they had when first fetched, and the commits owed.

    Tansu answers ListOffsets with the last batch's base offset + 1, so the end is taken from the
    fetch's high watermark (get_watermark_offsets cached) and from partition-EOF events, which are
    right on both Tansu and Kafka. A rebalance forgets what it takes away: a partition given back
    later is read again from its last commit and must reach its end again.
    """

    def __init__(self, consumer, topic: str) -> None:
        self.consumer, self.topic = consumer, topic
        self.assigned: set[int] = set()
        self.ends: dict[int, int] = {}
        self.caught_up: set[int] = set()
        self.pending: dict[int, int] = {}  # partition -> next offset to commit, indexed but not yet committed
        self.committed: set[int] = set()
        self.assignments = 0
        self.dropped = 0  # fetched for a partition taken away before it was indexed

    def on_assign(self, _consumer, partitions) -> None:
        self.assignments += 1
        self.assigned.update(p.partition for p in partitions)
        log.info("assigned partitions %s of %s", sorted(p.partition for p in partitions), self.topic)

    def on_revoke(self, consumer, partitions) -> None:
        """Taken away in a rebalance: commit what is owed for them while this member still may."""
        from confluent_kafka import KafkaException, TopicPartition

        held = [tp.partition for tp in partitions]
        owed = [TopicPartition(self.topic, p, self.pending[p]) for p in held if p in self.pending]
        if owed:
            try:
                consumer.commit(offsets=owed, asynchronous=False)
                self.committed.update(tp.partition for tp in owed)
            except KafkaException as exc:  # the next holder re-reads from the last commit: duplicates, never a gap
                log.warning("commit on revocation refused (%s); their next holder re-indexes from the last commit", exc)
        self._forget(partitions)

    def on_lost(self, _consumer, partitions) -> None:
        """Lost (session expired): another member may hold them already, so nothing is committed."""
        self._forget(partitions)

    def _forget(self, partitions) -> None:
        for p in partitions:
            self.assigned.discard(p.partition)
            self.caught_up.discard(p.partition)
            self.ends.pop(p.partition, None)
            self.pending.pop(p.partition, None)
        log.info("partitions %s of %s taken away in a rebalance", sorted(p.partition for p in partitions), self.topic)

    def holds(self, partition: int) -> bool:
        return partition in self.assigned

    def seen(self, message) -> None:
        from confluent_kafka import TopicPartition

        p = message.partition()
        if p not in self.ends:
            self.ends[p] = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)[1]
        if message.offset() + 1 >= self.ends[p]:
            self.caught_up.add(p)

    def reached_end(self, partition: int) -> None:
        self.caught_up.add(partition)

    def commit(self, consumer, offsets: dict[int, int]) -> None:
        """Commit `offsets` (partition -> next offset) with any commit still owed for a partition held.

        A commit the group refuses because it is rebalancing stays owed: the next poll serves the
        rebalance, and the commit is made then (partition kept) or on revocation (partition taken).
        """
        from confluent_kafka import KafkaException, TopicPartition

        self.pending = {p: o for p, o in self.pending.items() if p in self.assigned}
        for p, o in offsets.items():
            if p in self.assigned:
                self.pending[p] = max(self.pending.get(p, -1), o)
        if not self.pending:
            return
        try:
            offsets_owed = [TopicPartition(self.topic, p, o) for p, o in self.pending.items()]
            consumer.commit(offsets=offsets_owed, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and hasattr(error, "name") and error.name() in _REBALANCE_ERRORS:
                log.warning("commit deferred: the group is rebalancing (%s); the batch stays indexed", error.name())
                return
            reason = error.str() if hasattr(error, "str") else str(exc)
            problem = f"Kafka did not commit the offsets ({reason})"
            raise ServiceUnavailableError(f"{problem}; what was indexed is re-read next time") from None
        self.committed.update(self.pending)
        self.pending.clear()

    @property
    def done(self) -> bool:
        return bool(self.assigned) and self.assigned <= self.caught_up and not self.pending


def _check_source_topic(consumer, topic: str) -> int:
    """The topic's partition count; a clear error when it does not exist or Kafka cannot be reached."""
    from confluent_kafka import KafkaException

    try:
        found = consumer.list_topics(topic=topic, timeout=15).topics.get(topic)
    except KafkaException as exc:
        raise ServiceUnavailableError(
            f"cannot reach Kafka ({exc.args[0].str() if exc.args else exc}); "
            "check KAFKA_BOOTSTRAP_SERVERS or the kafka_default connection"
        ) from None
    if found is None or found.error is not None:
        raise PublisherError(f"Kafka topic '{topic}' does not exist; publish the catalog first or pass the right topic")
    return len(found.partitions)


def plan_consumers(
    partitions: dict[str, int], requested: int | None = None, group: str = defaults.DEFAULT_GROUP_ID
) -> list[dict]:
    """The consumers to start: for each topic, `requested` of them (all its partitions when None), never
    more than it has partitions (one more would hold nothing). Each is {"topic", "group", "consumer", "of"}.

    One topic: its consumers form `group`. Several: each topic's consumers form `<group>.<topic>`, because
    members of one group subscribed to different topics at once are assigned wrongly on Tansu (a
    partition left to nobody, members left without any), and on Kafka each join would stop every topic.
    """
    if requested is not None and requested < 1:
        raise PublisherError(f"the number of consumers must be at least 1 (got {requested})")
    plan = []
    for topic, count in partitions.items():
        n = max(1, min(requested or count, count))
        member_of = group if len(partitions) == 1 else f"{group}.{topic}"
        plan += [{"topic": topic, "group": member_of, "consumer": i + 1, "of": n} for i in range(n)]
    return plan


def committed_offsets(consumer, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """partition -> the offset the consumer's group has committed on the topic (negative where it has none). The
    consumer never subscribes, so the group is not disturbed."""
    from confluent_kafka import TopicPartition

    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    failed = [f"partition {p.partition}: {p.error.str()}" for p in committed if p.error is not None]
    if failed:  # not "no commit": a position check would pass over it
        reasons = "; ".join(failed)
        raise ServiceUnavailableError(f"Kafka did not give the group's committed offsets on '{topic}' ({reasons})")
    return {position.partition: position.offset for position in committed}


def unconsumed(consumer, topic: str, timeout: float = 10.0) -> int:
    """How many of the topic's messages lie past the committed offsets of the consumer's group: a partition without
    a commit counts from its low watermark."""
    from confluent_kafka import TopicPartition

    behind = 0
    for partition, offset in committed_offsets(consumer, topic, timeout).items():
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        behind += max(0, high - max(offset, low))
    return behind


def topic_partitions(consumer, topics) -> dict[str, int]:
    """Each topic's partition count, in the order given; a missing topic is the user's error."""
    return {topic: _check_source_topic(consumer, topic) for topic in dict.fromkeys(topics)}


def _poll(consumer, batch_size: int, catch_up: _CatchUp) -> list[Any]:
    """Up to batch_size messages (1 s at most); end-of-partition events go to catch_up, broker
    failures end the run as a service error."""
    from confluent_kafka import KafkaError

    records = []
    for message in consumer.consume(num_messages=batch_size, timeout=1.0):
        error = message.error()
        if error is None:
            # A rebalance served inside consume() may have taken the partition away after its message was
            # fetched: its new holder reads it from the last commit, so it is neither indexed nor committed here.
            if not catch_up.holds(message.partition()):
                catch_up.dropped += 1
                continue
            records.append(message)
            catch_up.seen(message)
        elif error.code() == KafkaError._PARTITION_EOF:
            if catch_up.holds(message.partition()):
                catch_up.reached_end(message.partition())
        elif error.fatal() or error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            raise ServiceUnavailableError(f"Kafka consumer failed: {error.str()}; check the brokers, then run again")
        else:
            log.warning("Kafka consumer: %s", error.str())
    return records


def index_messages(
    consumer,
    es,
    topic: str,
    index: str,
    dead_letters: DeadLetters,
    *,
    batch_size: int = defaults.DEFAULT_INDEX_BATCH,
    until_caught_up: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
    progress_every: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    alone: bool = False,
) -> IndexOutcome:
    """Consume `topic` with `consumer` (a group member, not yet subscribed) and index into `index`.

    With until_caught_up, returns once every assigned partition reached the end it had when first
    fetched; otherwise runs until should_stop() is true. Commits after every accepted batch. `alone`: the group
    is this consumer's only (a rebuild's replay): it takes every partition itself, without a group join.
    """
    catch_up = _start(consumer, es, topic, index, dead_letters, batch_size, alone)
    outcome = IndexOutcome()
    progress = Progress(log, f"indexed from {topic} into {index}", total=0, interval=progress_every)
    started = held = time.monotonic()
    while not should_stop():
        records = _poll(consumer, batch_size, catch_up)
        if catch_up.assigned:
            held = time.monotonic()
        if records:
            _process(consumer, es, index, dead_letters, records, outcome, sleep, catch_up)
            progress.advance(len(records))
        elif catch_up.pending:
            catch_up.commit(consumer, {})  # a commit a rebalance refused, once it is served
        if until_caught_up and catch_up.done:
            break
        # Waiting for partitions (first join, or after a rebalance took them all) has a limit.
        if until_caught_up and not catch_up.assigned:
            _check_assignment_wait(topic, held)
    _finish(es, index, progress, outcome, catch_up, started)
    return outcome


def _start(consumer, es, topic: str, index: str, dead_letters: DeadLetters, batch_size: int, alone: bool) -> _CatchUp:
    """Everything before the first poll: check the batch size, topic, index and dead-letter topic, then subscribe
    (or, alone, take every partition from the group's commits)."""
    from confluent_kafka import TopicPartition

    if batch_size < 1:
        raise PublisherError(f"batch size must be at least 1 (got {batch_size})")
    partitions = _check_source_topic(consumer, topic)
    ensure_index(es, index)
    dead_letters.ensure()
    catch_up = _CatchUp(consumer, topic)
    if alone:
        every = [TopicPartition(topic, p) for p in range(partitions)]  # no offset: from the commit, else the start
        consumer.assign(every)
        catch_up.on_assign(consumer, every)
    else:
        consumer.subscribe(
            [topic], on_assign=catch_up.on_assign, on_revoke=catch_up.on_revoke, on_lost=catch_up.on_lost
        )
    return catch_up


def _check_assignment_wait(topic: str, held: float) -> None:
    """Raise once this consumer has held no partition for ASSIGNMENT_TIMEOUT_S (since `held`, a monotonic time)."""
    if time.monotonic() - held > ASSIGNMENT_TIMEOUT_S:
        raise ServiceUnavailableError(
            f"no partition of '{topic}' was assigned for {ASSIGNMENT_TIMEOUT_S:.0f}s; "
            "another consumer of the same group may hold them all, or the group coordinator is unreachable"
        )


def _finish(es, index: str, progress: Progress, outcome: IndexOutcome, catch_up: _CatchUp, started: float) -> None:
    """After the last batch: make the documents searchable, complete the outcome and log it."""
    progress.finish()
    es.indices.refresh(index=index)
    outcome.elapsed_s = round(time.monotonic() - started, 3)
    outcome.assignments, outcome.partitions = catch_up.assignments, sorted(catch_up.committed)
    log.info(
        "indexed %d, deleted %d, dead-lettered %d of %d messages in %d batches (%.1fs); committed partitions %s, "
        "%d assignments, %d fetched messages left to the partitions' new holders",
        *(
            outcome.indexed,
            outcome.deleted,
            outcome.dead_lettered,
            outcome.consumed,
            outcome.batches,
            outcome.elapsed_s,
        ),
        *(outcome.partitions, outcome.assignments, catch_up.dropped),
    )


def _process(consumer, es, index: str, dead_letters: DeadLetters, records: list, outcome, sleep, catch_up) -> None:
    """Index one batch, dead-letter what was refused, then commit the batch's offsets."""
    actions, refused = _actions(records, index)
    if actions:
        refused += _bulk(es, actions, outcome, sleep)
    dead_letters.send(refused)
    for message, reason in refused:
        log.error("dead-lettered %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), reason)
        if len(outcome.dead_letter_examples) < 5:
            outcome.dead_letter_examples.append(reason)
    outcome.dead_lettered += len(refused)
    outcome.consumed += len(records)
    outcome.batches += 1
    following: dict[int, int] = {}
    for message in records:
        following[message.partition()] = max(following.get(message.partition(), 0), message.offset() + 1)
    catch_up.commit(consumer, following)


def verify_catalog_indexed(es, index: str, products, *, chunk: int = 1000, examples: int = 5) -> dict[str, int]:
    """Check that every product of `products` is in the index with the same image_url; raise if not.

    Reads documents back by id (mget), so it checks what a search would return, not what the
    indexer believes it wrote.
    """
    es.indices.refresh(index=index)
    check = _IndexCheck(es, index, examples)
    for batch in _chunks_with_ids(products, chunk):
        check.compare(batch)
    total = es.count(index=index)["count"]
    if check.missing or check.mismatched:
        raise PublisherError(
            f"index '{index}' does not match the catalog: {check.missing} of {check.checked} products missing, "
            f"{check.mismatched} with another image_url "
            f"(e.g. {'; '.join(check.problems)}); see the dead-letter topic and the indexing log"
        )
    log.info(
        "verified %d products in index %s (%d documents in all; %d of them since replaced by a later day's)",
        *(check.checked, index, total, check.superseded),
    )
    result = {"verified": check.checked, "index_documents": total}
    return result | ({"superseded": check.superseded} if check.superseded else {})


def _chunks_with_ids(products, chunk: int) -> Iterator[list[dict]]:
    """The products that have an id, in lists of `chunk` (the last one shorter): one mget each."""
    batch: list[dict] = []
    for product in products:
        if product_id(product) is None:
            continue
        batch.append(product)
        if len(batch) >= chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def _newer(indexed: dict, product: dict) -> bool:
    """Whether the indexed document is a later day's version of the product (see version_of)."""
    ours, theirs = version_of(product), version_of(indexed)
    return bool(ours and theirs) and theirs["version"] > ours["version"]


class _IndexCheck:
    """verify_catalog_indexed's counts: products checked, missing, indexed with another image_url, examples."""

    def __init__(self, es, index: str, examples: int) -> None:
        self.es, self.index, self.examples = es, index, examples
        self.checked = self.missing = self.mismatched = self.superseded = 0
        self.problems: list[str] = []

    def compare(self, batch: list[dict]) -> None:
        """Read the batch's documents back by id and compare each with its product."""
        ids = [product_id(p) for p in batch]
        found = self.es.mget(index=self.index, ids=ids)["docs"]
        for product, doc in zip(batch, found, strict=True):
            self.checked += 1
            if not doc.get("found"):
                self.missing += 1
                self._example(f"{product_id(product)} missing")
            elif doc["_source"].get("image_url") == product.get("image_url"):
                continue
            elif _newer(doc["_source"], product):
                self.superseded += 1  # a later day of this product was published and indexed since
            else:
                self.mismatched += 1
                actual, expected = doc["_source"].get("image_url"), product.get("image_url")
                self._example(f"{product_id(product)} has image_url {actual!r}, expected {expected!r}")

    def _example(self, problem: str) -> None:
        """Keep the first `examples` problems for the error message."""
        if len(self.problems) < self.examples:
            self.problems.append(problem)
