"""The search index as users query it: an alias (`products`) in front of versioned indexes
(`products-<UTC second>-<4 hex digits>`).

Elasticsearch cannot change a field's mapping in place, so a mapping change is a new version built beside the
live one and one atomic `_aliases` call that moves the alias (reindex.py). The alias's write index takes the live
indexer's writes; earlier versions stay for a rollback (PUBLISHER_INDEX_VERSIONS_KEPT of them). An index made
before aliases (a concrete `products`) keeps working, and the first rebuild moves it behind the alias.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError

log = logging.getLogger(__name__)

# The index's explicit mapping: ids and URLs are exact-match keywords, text is searchable, and
# fields the catalog adds later are mapped dynamically.
INDEX_MAPPING = {
    "dynamic": True,
    "properties": {
        "product_id": {"type": "keyword"},
        "name": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
        "description": {"type": "text"},
        "category": {"type": "keyword"},
        "price": {"type": "double"},
        "currency": {"type": "keyword"},
        "stock": {"type": "integer"},
        "tags": {"type": "keyword"},
        "image_url": {"type": "keyword"},
        "created_at": {"type": "date"},
    },
}
# While a version is filled from the topic: no periodic refresh, no replicas (Elasticsearch's advice for a bulk
# load); the live index's values are set back before searches reach it.
BULK_LOAD_SETTINGS = {"index": {"refresh_interval": "-1", "number_of_replicas": 0}}
WRITE_BLOCK = "index.blocks.write"


def version_name(alias: str, now: datetime | None = None) -> str:
    """A new version's name: the alias, the UTC second, and random digits, so two rebuilds never pick the same."""
    return f"{alias}-{(now or datetime.now(UTC)):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"


def is_version_of(alias: str, name: str) -> bool:
    """Whether `name` is one of the alias's versions (`products-eu-...` is not one of `products`)."""
    return re.fullmatch(rf"{re.escape(alias)}-\d{{14}}-[0-9a-f]{{4}}", name) is not None


@dataclass(frozen=True)
class Live:
    """What `alias` names now: the index searches read and the indexer writes (None when nothing exists), and
    whether the name is a concrete index made before aliases."""

    alias: str
    index: str | None
    concrete: bool = False


@contextlib.contextmanager
def elasticsearch_errors(doing: str):
    """Elasticsearch's failures as the project's: overloaded or unreachable (retried) or the user's to fix."""
    from elasticsearch import ApiError, TransportError

    try:
        yield
    except ApiError as exc:
        if exc.status_code == 429 or exc.status_code >= 500:
            raise ServiceUnavailableError(
                f"Elasticsearch answered {exc.status_code} while {doing}; it is overloaded or down, try again later"
            ) from None
        if exc.status_code == 401:
            raise PublisherError(
                "Elasticsearch rejected the credentials (401); "
                "check ELASTICSEARCH_API_KEY or ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD, "
                "or the elasticsearch_default connection's login/password or api_key extra"
            ) from None
        raise PublisherError(
            f"Elasticsearch refused {doing}: {exc.message}; check the index name and the user's privileges"
        ) from None
    except TransportError as exc:
        raise ServiceUnavailableError(
            f"cannot reach Elasticsearch ({exc}); check ELASTICSEARCH_URL or the elasticsearch_default connection"
        ) from None


def live_index(es, alias: str) -> Live:
    """Where `alias` points: its write index (its only index when it has one), or the concrete index of that name."""
    from elasticsearch import NotFoundError

    with elasticsearch_errors(f"checking index '{alias}'"):
        try:
            pointed = dict(es.indices.get_alias(name=alias))
        except NotFoundError:
            return Live(alias, alias, concrete=True) if es.indices.exists(index=alias) else Live(alias, None)
    writers = [name for name, found in pointed.items() if found["aliases"][alias].get("is_write_index")]
    if len(writers) != 1 and len(pointed) != 1:
        raise PublisherError(
            f"alias '{alias}' points at {sorted(pointed)} without one write index; make one of them its write "
            "index (POST _aliases with is_write_index), or point the alias at one index"
        )
    return Live(alias, writers[0] if writers else next(iter(pointed)))


def ensure_alias(es, alias: str) -> bool:
    """Make the alias and its first version when the name is free; True if this call made them. A concrete
    index or an alias of that name is used as it is. Two consumers racing here make one alias: Elasticsearch
    refuses the second write index, and the loser's index is not created."""
    if live_index(es, alias).index is not None:
        return False
    try:
        create_version(es, alias, live=True)
    except (PublisherError, ServiceUnavailableError):
        if live_index(es, alias).index is None:
            raise
        return False  # made meanwhile by another consumer
    return True


def create_version(es, alias: str, *, live: bool = False, meta: dict[str, Any] | None = None) -> str:
    """A new version with INDEX_MAPPING: the alias's write index at once (`live`), or set up for a bulk load and
    out of searches' sight until a swap."""
    name = version_name(alias)
    mappings = {**INDEX_MAPPING, "_meta": {"alias": alias, **(meta or {}), **_live_since(live)}}
    arguments: dict[str, Any] = {"aliases": {alias: {"is_write_index": True}}} if live else {}
    if not live:
        arguments["settings"] = BULK_LOAD_SETTINGS
    with elasticsearch_errors(f"creating index '{name}'"):
        es.indices.create(index=name, mappings=mappings, **arguments)
    log.info("created index %s for alias %s%s", name, alias, " (its write index)" if live else "")
    return name


def _live_since(live: bool) -> dict[str, str]:
    """The mapping's _meta mark of a version searches read (or once read): what a rollback may go back to."""
    return {"live_since": datetime.now(UTC).isoformat(timespec="seconds")} if live else {}


def versions(es, alias: str) -> dict[str, dict[str, Any]]:
    """The alias's versions, oldest first, each with its mapping's _meta."""
    with elasticsearch_errors(f"listing the versions of '{alias}'"):
        found = dict(es.indices.get_mapping(index=f"{alias}-*", allow_no_indices=True))
    metas = {name: found[name].get("mappings", {}).get("_meta", {}) for name in found if is_version_of(alias, name)}
    return dict(sorted(metas.items()))


def previous_version(es, alias: str, current: str) -> str | None:
    """The version searches read last before `current`: the newest `live_since` of the others (a rebuild that never
    went live is no place to roll back to, and after a rollback the version rolled away from is not "before")."""
    found = versions(es, alias)
    once_live = [name for name, meta in found.items() if name != current and meta.get("live_since")]
    return max(once_live, key=lambda name: found[name]["live_since"], default=None)


def set_write_block(es, index: str, blocked: bool) -> None:
    """Block (or allow again) writes to `index`: the live indexer's writes are refused with 403
    cluster_block_exception, which it retries, while the alias moves."""
    with elasticsearch_errors(f"{'blocking' if blocked else 'unblocking'} writes to '{index}'"):
        es.indices.put_settings(index=index, settings={WRITE_BLOCK: blocked or None})


def open_for_searches(es, index: str, like: str | None) -> None:
    """Give a bulk-loaded version the live index's refresh interval and replicas (Elasticsearch's defaults when
    there is none), and refresh it, so a search through the alias finds every document the moment it moves."""
    kept: dict[str, Any] = {}
    if like is not None:
        with elasticsearch_errors(f"reading the settings of '{like}'"):
            kept = es.indices.get_settings(index=like)[like]["settings"]["index"]
    restored = {"refresh_interval": kept.get("refresh_interval"), "number_of_replicas": kept.get("number_of_replicas")}
    with elasticsearch_errors(f"restoring the settings of '{index}'"):
        es.indices.put_settings(index=index, settings={"index": restored})
        es.indices.refresh(index=index)


def move_alias(es, live: Live, to: str) -> None:
    """One `_aliases` call: the alias leaves the live index (a concrete index of the alias's name is deleted, its
    name being needed for the alias) and points at `to` as its write index."""
    alias = live.alias
    if live.index is None:
        leave: list[dict[str, Any]] = []
    elif live.concrete:
        leave = [{"remove_index": {"index": live.index}}]
    else:
        leave = [{"remove": {"index": live.index, "alias": alias}}]
    with elasticsearch_errors(f"moving alias '{alias}' to '{to}'"):
        es.indices.update_aliases(actions=[*leave, {"add": {"index": to, "alias": alias, "is_write_index": True}}])
    log.info("alias %s now points at %s (was %s)", alias, to, live.index or "nothing")


def mark_live(es, index: str) -> None:
    """Note in the version's _meta that searches read it from now on (previous_version's choice)."""
    with elasticsearch_errors(f"marking '{index}' live"):
        meta = dict(es.indices.get_mapping(index=index))[index]["mappings"].get("_meta", {})
        es.indices.put_mapping(index=index, meta={**meta, **_live_since(True)})


def prune(es, alias: str, live_index_name: str, keep: int) -> list[str]:
    """Delete the alias's versions older than the live one beyond the `keep` newest of them. Newer ones are left:
    one a rollback left behind, or a rebuild under way (its run deletes it if it fails)."""
    earlier = [name for name in versions(es, alias) if name < live_index_name]
    doomed = earlier[: max(0, len(earlier) - keep)]
    with elasticsearch_errors(f"deleting old versions of '{alias}'"):
        for name in doomed:
            es.indices.delete(index=name)
    if doomed:
        log.info("deleted %s (%d earlier versions of %s are kept)", ", ".join(doomed), keep, alias)
    return doomed
