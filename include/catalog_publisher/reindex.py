"""Step 7b: rebuild the search index beside the live one, then swap it in (DAG: rebuild_product_index).

A mapping change needs a new index, and the compacted topic already holds the whole catalog, so no publish is
needed: a new version of the alias (index_versions) is filled by replaying the topic from its start with a
consumer group of its own, while the live indexer goes on writing into the live index. The new version is checked
against the latest published catalog, then:

1. writes to the live index are blocked; the live indexer's bulk items are refused with a 403 it retries;
2. the new version replays to the topic's end, which holds everything the live index was given, and must stand at
   or past the live group's committed offsets;
3. it gets the live index's refresh and replica settings, is refreshed, and one `_aliases` call moves the alias;
4. the old index's writes are allowed again, and the live group's offsets are committed for it under its own
   replay group, so a rollback catches it up from there instead of from the topic's start.

The live indexer's retries then land in the new version. The same steps, with an earlier version as the target,
are the rollback. A failed check leaves the alias where it was and says why.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from include.catalog_publisher.catalog import encode_json, product_id
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.index_versions import (
    Live,
    create_version,
    elasticsearch_errors,
    live_index,
    move_alias,
    open_for_searches,
    previous_version,
    prune,
    set_write_block,
)
from include.catalog_publisher.indexer import (
    DeadLetters,
    IndexOutcome,
    committed_offsets,
    index_messages,
    verify_catalog_indexed,
)

log = logging.getLogger(__name__)

SAMPLE = 200  # documents compared byte for byte with their catalog products
ACTIONS = ("rebuild", "rollback")


def replay_group(group: str, index: str) -> str:
    """The consumer group that fills `index`: named after it, so two rebuilds never share one."""
    return f"{group}.rebuild.{index}"


@dataclass
class Plan:
    """What a rebuild or rollback run does: fill `target` from `topic` and move `alias` to it from `previous`."""

    action: str
    alias: str
    topic: str
    group: str  # the live indexer's group: how far the live index has got
    target: str
    previous: str | None  # the index the alias (or the concrete index of its name) is now
    concrete: bool  # `previous` is a concrete index made before aliases: the swap replaces it
    created: bool  # `target` was made by this run (and is deleted if the run fails)

    @property
    def replay_group(self) -> str:
        return replay_group(self.group, self.target)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(es, action: str, alias: str, topic: str, group: str) -> Plan:
    """A rebuild makes a new version; a rollback goes back to the version before the live one."""
    if action not in ACTIONS:
        raise PublisherError(f"action must be one of {', '.join(ACTIONS)} (got {action!r})")
    live = live_index(es, alias)
    if action == "rebuild":
        target = create_version(es, alias, meta={"topic": topic, "group": group})
        return Plan(action, alias, topic, group, target, live.index, live.concrete, created=True)
    if live.index is None or live.concrete:
        what = "does not exist" if live.index is None else "is a concrete index, not an alias over versions"
        raise PublisherError(f"'{alias}' {what}: there is no earlier version to roll back to; rebuild it instead")
    target = previous_version(es, alias, live.index)
    if target is None:
        raise PublisherError(
            f"alias '{alias}' points at {live.index} and no earlier version that searches read is left "
            "(see PUBLISHER_INDEX_VERSIONS_KEPT); nothing to roll back to"
        )
    return Plan(action, alias, topic, group, target, live.index, False, created=False)


class Switch:
    """A plan's steps with their clients: `consumer_for(group)` makes a consumer (not subscribed) of a group."""

    def __init__(self, es, consumer_for: Callable[[str], Any], dead_letters: DeadLetters, batch_size: int) -> None:
        self.es, self.consumer_for, self.dead_letters, self.batch_size = es, consumer_for, dead_letters, batch_size

    def fill(self, p: Plan) -> IndexOutcome:
        """Index the topic into the target from the replay group's commits (the start, for a new group) to its end."""
        with contextlib.closing(self.consumer_for(p.replay_group)) as consumer:
            return index_messages(consumer, self.es, p.topic, p.target, self.dead_letters, batch_size=self.batch_size)

    def positions(self, group: str, topic: str) -> dict[int, int]:
        """partition -> the group's committed offset (partitions it has none for left out)."""
        with contextlib.closing(self.consumer_for(group)) as consumer:
            return {p: o for p, o in committed_offsets(consumer, topic).items() if o >= 0}

    def swap(self, p: Plan, keep: int) -> dict[str, Any]:
        """Block writes to the live index, catch the target up, check it stands past the live group, move the
        alias; writes to the old index are allowed again whatever happens."""
        live = live_index(self.es, p.alias)
        if live.index != p.previous:
            raise PublisherError(
                f"alias '{p.alias}' moved to {live.index} while this run filled {p.target}; nothing was swapped"
            )
        if live.index is not None:
            set_write_block(self.es, live.index, True)
        moved = False
        try:
            result = self._catch_up_and_move(p, live)
            moved = True
        finally:
            if live.index is not None and not (moved and live.concrete):
                set_write_block(self.es, live.index, False)
        return {**result, "deleted": prune(self.es, p.alias, p.target, keep)}

    def _catch_up_and_move(self, p: Plan, live: Live) -> dict[str, Any]:
        """Under the write block: the last messages, the position check, the counts, the move."""
        final = self.fill(p)
        if final.dead_lettered:
            raise PublisherError(
                f"{final.dead_lettered} of the last {final.consumed} messages were refused by {p.target} "
                f"({'; '.join(final.dead_letter_examples)}); the alias stays on {live.index}"
            )
        live_at, ours = self.positions(p.group, p.topic), self.positions(p.replay_group, p.topic)
        behind = {part: (ours.get(part, 0), offset) for part, offset in live_at.items() if ours.get(part, 0) < offset}
        if behind:
            where = ", ".join(f"partition {k} at {a} < {b}" for k, (a, b) in sorted(behind.items()))
            raise PublisherError(f"{p.target} is behind the live group '{p.group}' ({where}); the alias was not moved")
        open_for_searches(self.es, p.target, like=live.index)
        with elasticsearch_errors("counting documents"):
            counts = {"documents": self.es.count(index=p.target)["count"]}
            if live.index is not None:
                counts["previous_documents"] = self.es.count(index=live.index)["count"]
        move_alias(self.es, live, p.target)
        if live.index is not None and not live.concrete and live_at:
            self._record_position(replay_group(p.group, live.index), p.topic, live_at)
        return {"alias": p.alias, "index": p.target, "previous": live.index, "caught_up": final.consumed, **counts}

    def _record_position(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Commit what the old index holds (the live group's offsets, under the write block) for its replay group:
        a rollback to it replays from there. Lost (offsets expire), a rollback replays the whole topic."""
        from confluent_kafka import TopicPartition

        with contextlib.closing(self.consumer_for(group)) as consumer:
            consumer.commit(offsets=[TopicPartition(topic, k, o) for k, o in offsets.items()], asynchronous=False)

    def discard(self, p: Plan) -> bool:
        """After a run that failed: delete a version it made that the alias does not point at, and allow writes
        to the live index again (a worker killed under the write block leaves it set)."""
        live = live_index(self.es, p.alias)
        if live.index is not None:
            set_write_block(self.es, live.index, False)
        if not p.created or live.index == p.target:
            return False
        with elasticsearch_errors(f"deleting '{p.target}'"), contextlib.suppress(Exception):
            self.es.indices.delete(index=p.target, ignore_unavailable=True)
        log.warning("deleted %s: the run did not swap it in, the alias stays on %s", p.target, live.index)
        return True


class _Sample:
    """A uniform sample of the catalog's products (reservoir), taken while verification streams them."""

    def __init__(self, size: int, seed: str) -> None:
        self.size, self.seen, self.kept = size, 0, []
        self.random = random.Random(seed)

    def through(self, products: Iterable[Any]) -> Iterator[Any]:
        for product in products:
            if isinstance(product, dict) and product_id(product) is not None:
                self.seen += 1
                if len(self.kept) < self.size:
                    self.kept.append(product)
                elif (slot := self.random.randrange(self.seen)) < self.size:
                    self.kept[slot] = product
            yield product


def verify_version(es, index: str, products: Iterable[Any], sample: int = SAMPLE) -> dict[str, Any]:
    """The index holds the catalog: every product's id with its image_url, as many documents as products, and a
    sample of documents equal to their products' JSON bytes. Raise naming what differs."""
    sampled = _Sample(sample, seed=index)
    problems, result = [], {}
    try:
        result = verify_catalog_indexed(es, index, sampled.through(products))
    except PublisherError as exc:
        problems.append(str(exc).split("; see ")[0])
    if result and result["index_documents"] != result["verified"]:
        problems.append(f"{result['index_documents']} documents for {result['verified']} catalog products")
    differing = _differing(es, index, sampled.kept)
    if differing:
        examples = ", ".join(differing[:5])
        sampled_count = len(sampled.kept)
        problems.append(
            f"{len(differing)} of {sampled_count} sampled documents differ from their products ({examples})"
        )
    if problems:
        raise PublisherError(f"verification of {index} failed: {'; '.join(problems)}")
    return {**result, "sampled": len(sampled.kept)}


def _differing(es, index: str, products: list[dict]) -> list[str]:
    """The ids among `products` whose document's JSON is not the product's (a missing one is left to the id check;
    a later day's version is no difference: see indexer.version_of)."""
    from include.catalog_publisher.indexer import version_of

    if not products:
        return []
    with elasticsearch_errors(f"reading documents from '{index}'"):
        docs = es.mget(index=index, ids=[product_id(p) for p in products])["docs"]
    differing = []
    for product, doc in zip(products, docs, strict=True):
        if not doc.get("found"):
            continue  # a missing document is the id check's finding
        source = doc["_source"]
        newer = version_of(source).get("version", 0) > version_of(product).get("version", 0)
        if encode_json(source) != encode_json(product) and not newer:
            differing.append(str(product_id(product)))
    return differing
