"""Step 7b: rebuild the search index beside the live one, then swap it in (DAG: rebuild_product_index).

A mapping change needs a new index, and the compacted topic already holds the whole catalog, so no publish is
needed: a new version of the alias (index_versions) is filled by replaying the topic from its start with a
consumer group of its own, while the live indexer goes on writing into the live index. The new version is checked
against the latest published catalog, then (swap):

1. it replays what came meanwhile and gets the live index's refresh and replica settings;
2. writes to the live index are blocked; the live indexer's bulk items are refused with a 403 it retries;
3. the new version replays to the topic's end, which holds everything the live index was given, and must stand at
   or past the live group's committed offsets, within BLOCK_BUDGET_S;
4. one `_aliases` call moves the alias; the old index's writes are allowed again, and the live group's offsets are
   committed for it under its own replay group, so a rollback catches it up from there;
5. when no live indexer is running, the live group is moved to the new version's position, so its next run does
   not index again what the replay did. When one is running, Kafka refuses that, and the running indexer indexes
   again, in the topic's order, the messages between its position and the replay's: for those seconds a product
   changed twice there may show its earlier state (a later image day never: external versions), until it reaches
   the later message, in this run or the next one, which the publish that sent it started.

The same steps, with the version searches read before as the target, are the rollback. A failed check leaves the
alias where it was and says why.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from include.catalog_publisher.catalog import encode_json, product_id
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.index_versions import (
    Live,
    create_version,
    elasticsearch_errors,
    live_index,
    mark_live,
    move_alias,
    open_for_searches,
    previous_version,
    prune,
    set_write_block,
    versions,
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
# The longest the live index's writes stay blocked before the swap gives up and is retried: well within the live
# indexer's retries of a blocked write (indexer.BULK_RETRIES, about 30 s).
BLOCK_BUDGET_S = 15.0
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


def plan(es, action: str, alias: str, topic: str, group: str, run_id: str = "") -> Plan:
    """A rebuild makes a new version (or takes the one this run made before: a task cleared in the UI runs the plan
    again); a rollback goes back to the version searches read before the live one."""
    if action not in ACTIONS:
        raise PublisherError(f"action must be one of {', '.join(ACTIONS)} (got {action!r})")
    live = live_index(es, alias)
    if action == "rebuild":
        made = {name: meta for name, meta in versions(es, alias).items() if run_id and meta.get("run_id") == run_id}
        if made:  # what it replaces as the plan first found it (the alias may have moved to it since)
            target, meta = list(made.items())[-1]
            return Plan(action, alias, topic, group, target, meta.get("replaces"), bool(meta.get("concrete")), True)
        meta = {"topic": topic, "group": group, "run_id": run_id, "replaces": live.index, "concrete": live.concrete}
        target = create_version(es, alias, meta=meta)
        return Plan(action, alias, topic, group, target, live.index, live.concrete, created=True)
    if live.index is None or live.concrete:
        what = "does not exist" if live.index is None else "is a concrete index, not an alias over versions"
        raise PublisherError(f"'{alias}' {what}: there is no earlier version to roll back to; rebuild it instead")
    target = previous_version(es, alias, live.index)
    if target is None:
        raise PublisherError(
            f"alias '{alias}' points at {live.index} and no other version that searches read is left (the first "
            "rebuild replaces an index made before aliases; later ones keep PUBLISHER_INDEX_VERSIONS_KEPT); "
            "nothing to roll back to"
        )
    return Plan(action, alias, topic, group, target, live.index, False, created=False)


class Switch:
    """A plan's steps with their clients: `consumer_for(group)` makes a consumer (not subscribed) of a group."""

    def __init__(self, es, consumer_for: Callable[[str], Any], dead_letters: DeadLetters, batch_size: int) -> None:
        self.es, self.consumer_for, self.dead_letters, self.batch_size = es, consumer_for, dead_letters, batch_size

    def fill(self, p: Plan) -> IndexOutcome:
        """Index the topic into the target from the replay group's commits (the start, for a new group) to its end."""
        with contextlib.closing(self.consumer_for(p.replay_group)) as consumer:
            return index_messages(
                consumer, self.es, p.topic, p.target, self.dead_letters, batch_size=self.batch_size, alone=True
            )

    def positions(self, group: str, topic: str) -> dict[int, int]:
        """partition -> the group's committed offset (partitions it has none for left out)."""
        with contextlib.closing(self.consumer_for(group)) as consumer:
            return {p: o for p, o in committed_offsets(consumer, topic).items() if o >= 0}

    def swap(self, p: Plan, keep: int, verified: str | None) -> dict[str, Any]:
        """Catch the target up, block writes to the live index, catch up the rest, move the alias; the old index's
        writes are allowed again whatever happens. Run again after the alias moved, it only finishes up."""
        live = live_index(self.es, p.alias)
        if live.index == p.target:
            log.info("alias %s already points at %s (an earlier try moved it)", p.alias, p.target)
            return {"alias": p.alias, "index": p.target, "previous": p.previous, **self._after_move(p, keep, None)}
        if live.index != p.previous:
            raise PublisherError(
                f"alias '{p.alias}' moved to {live.index} while this run filled {p.target}; nothing was swapped"
            )
        if verified != p.target:
            raise PublisherError(f"{p.target} was not verified in this run; nothing was swapped")
        self.fill(p)  # before the block: what came while it was verified, so the block lasts only the rest
        open_for_searches(self.es, p.target, like=live.index)
        if live.index is not None:
            set_write_block(self.es, live.index, True)
        moved = False
        try:
            result = self._catch_up_and_move(p, live, time.monotonic() + BLOCK_BUDGET_S)
            moved = True
        finally:
            if live.index is not None and not (moved and live.concrete):
                self._best_effort(f"allowing writes to {live.index} again", set_write_block, self.es, live.index, False)
        position = result.pop("position")
        return {**result, **self._after_move(p, keep, position)}

    def _catch_up_and_move(self, p: Plan, live: Live, deadline: float) -> dict[str, Any]:
        """Under the write block: the last messages, the position check, the counts, the move."""
        final = self.fill(p)
        if final.dead_lettered:
            raise PublisherError(
                f"{final.dead_lettered} of the last {final.consumed} messages were refused by {p.target} "
                f"({'; '.join(final.dead_letter_examples)}); the alias stays on {live.index}"
            )
        live_at, ours = self.positions(p.group, p.topic), self.positions(p.replay_group, p.topic)
        with elasticsearch_errors("counting documents"):
            self.es.indices.refresh(index=p.target)
            counts = {"documents": self.es.count(index=p.target)["count"]}
            if live.index is not None:
                counts["previous_documents"] = self.es.count(index=live.index)["count"]
        _check_positions(p, live_at, ours, counts.get("previous_documents", 0))
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(
                f"the catch-up under the write block took over {BLOCK_BUDGET_S:.0f}s (the live indexer retries "
                "about 30s): the alias was not moved; a retry catches up first and tries again"
            )
        move_alias(self.es, live, p.target)
        if live.index is not None and not live.concrete and live_at:
            self._best_effort(
                f"recording what {live.index} holds", self._commit, replay_group(p.group, live.index), p.topic, live_at
            )
        result = {"alias": p.alias, "index": p.target, "previous": live.index, "caught_up": final.consumed}
        return {**result, **counts, "position": ours}

    def _after_move(self, p: Plan, keep: int, position: dict[int, int] | None) -> dict[str, Any]:
        """Best effort once the alias points at the target: the target is marked live (what a rollback looks for);
        when no live indexer is running (Kafka refuses a commit to a group with members), its group goes on from
        the target's position instead of re-indexing what the replay indexed; older versions are pruned."""
        self._best_effort(f"marking {p.target} live", mark_live, self.es, p.target)
        caught_up = False
        if position:
            caught_up = self._best_effort(
                f"moving group {p.group} to {p.target}'s position", self._commit, p.group, p.topic, position
            )
        deleted = self._best_effort(f"deleting old versions of {p.alias}", prune, self.es, p.alias, p.target, keep)
        return {"live_group_moved": bool(caught_up), "deleted": deleted or []}

    def _commit(self, group: str, topic: str, offsets: dict[int, int]) -> bool:
        """Commit offsets for a group without joining it: Kafka takes it only while the group has no member."""
        from confluent_kafka import KafkaException, TopicPartition

        with contextlib.closing(self.consumer_for(group)) as consumer:
            try:
                done = consumer.commit(
                    offsets=[TopicPartition(topic, k, o) for k, o in offsets.items()], asynchronous=False
                )
            except KafkaException as exc:
                log.info("group %s did not take the offsets (%s)", group, exc.args[0].str() if exc.args else exc)
                return False
        failed = [f"partition {t.partition}: {t.error.str()}" for t in done or [] if t.error is not None]
        if failed:
            log.warning("group %s did not take every offset: %s", group, "; ".join(failed))
        return not failed

    def _best_effort(self, doing: str, step: Callable[..., Any], *args) -> Any:
        """A step after the alias moved: its failure is logged, never undoes or hides the swap."""
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - logged with what it was doing; the swap stands
            log.warning("%s failed (%s); the alias stays where it is", doing, exc)
            return None

    def discard(self, p: Plan) -> bool:
        """After a run that failed: allow writes again to both indexes (a worker killed under the write block leaves
        it set), and delete a version this run made that the alias does not point at."""
        from elasticsearch import NotFoundError

        for index in {p.previous, p.target} - {None}:
            with contextlib.suppress(NotFoundError):
                set_write_block(self.es, index, False)
        live = live_index(self.es, p.alias)
        if not p.created or live.index == p.target:
            return False
        with elasticsearch_errors(f"deleting '{p.target}'"):
            self.es.indices.delete(index=p.target, ignore_unavailable=True)
        log.warning("deleted %s: the run did not swap it in, the alias stays on %s", p.target, live.index)
        return True


def _check_positions(p: Plan, live_at: dict[int, int], ours: dict[int, int], live_documents: int) -> None:
    """The target must stand at or past the live group on every partition; a live group without any commit while
    the live index holds documents is another group than the live indexer's."""
    if not live_at and live_documents:
        raise PublisherError(
            f"group '{p.group}' has no committed offsets on '{p.topic}' while {p.previous} holds {live_documents} "
            f"documents: it is not the live indexer's group (a run that indexed several topics at once uses "
            f"'{p.group}.<topic>'); set group_id to it. Nothing was swapped"
        )
    behind = {part: (ours.get(part, 0), offset) for part, offset in live_at.items() if ours.get(part, 0) < offset}
    if behind:
        where = ", ".join(f"partition {k} at {a} < {b}" for k, (a, b) in sorted(behind.items()))
        raise PublisherError(f"{p.target} is behind the live group '{p.group}' ({where}); the alias was not moved")


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
