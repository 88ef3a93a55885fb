"""How long a DAG's run folders are kept: data/runs/<dag>/<run>/, the worker-local data/work/<dag>/<run>/
and, with $PUBLISHER_ARTIFACTS_URL, the <prefix>/<dag>/<run>/ objects. Applied by the DAG itself.

  PUBLISHER_RETENTION_DAYS         a run folder not modified for this many days is removed (default 30;
                                   `none` keeps runs for ever)
  PUBLISHER_RETENTION_RUNS         at most this many run folders per DAG are kept, the most recently
                                   modified ones (default: no limit)
  PUBLISHER_RETENTION_GRACE_HOURS  a run folder modified within this many hours is never removed, whatever
                                   the two limits say: its run may still be going (default 24, more
                                   than a task's 2 h execution timeout and its retries)

The current run is never removed, nor the `latest/` copies. A run's age is the time since anything in
its folder was last written, so a long backfill or a retried batch keeps its folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from include.catalog_publisher import settings
from include.catalog_publisher.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

LATEST = "latest"


@dataclass(frozen=True)
class Retention:
    days: float | None = settings.RETENTION_DAYS.default
    runs: int | None = None
    grace: timedelta = timedelta(hours=settings.RETENTION_GRACE_HOURS.default)

    @classmethod
    def from_env(cls) -> Retention:
        runs, grace = settings.value(settings.RETENTION_RUNS), settings.value(settings.RETENTION_GRACE_HOURS)
        return cls(settings.value(settings.RETENTION_DAYS), runs, timedelta(hours=grace or 0))

    def expired(self, modified: dict[str, datetime], current: str, now: datetime | None = None) -> list[str]:
        """The run folders (name -> last modification) to remove; `current` is kept whatever it holds."""
        now = now or datetime.now(UTC)
        ordered = sorted({**modified, current: now}.items(), key=lambda item: item[1], reverse=True)
        expired = []
        for position, (name, when) in enumerate(ordered):
            age = now - when
            if name == current or age < self.grace:
                continue
            too_old = self.days is not None and age > timedelta(days=self.days)
            too_many = self.runs is not None and position >= self.runs
            if too_old or too_many:
                expired.append(name)
        return expired


def _newest_mtime(folder: Path) -> datetime:
    newest = folder.stat().st_mtime
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except FileNotFoundError:  # removed meanwhile
                continue
    return datetime.fromtimestamp(newest, UTC)


def prune_local(dag_folder: Path, current: str, policy: Retention) -> list[str]:
    """Remove the expired run folders under dag_folder (data/runs/<dag> or data/work/<dag>); return their names."""
    if not dag_folder.is_dir():
        return []
    folders = [entry for entry in os.scandir(dag_folder) if entry.is_dir(follow_symlinks=False)]
    modified = {entry.name: _newest_mtime(Path(entry.path)) for entry in folders}
    modified.pop(LATEST, None)
    removed = []
    for name in policy.expired(modified, current):
        try:
            shutil.rmtree(dag_folder / name)
            removed.append(name)
        except OSError as exc:
            log.warning("could not remove the old run folder %s: %s", dag_folder / name, exc)
    return removed


def prune_objects(folder, dag_id: str, current: str, policy: Retention) -> list[str]:
    """Remove the expired runs' objects under <location>/<dag_id>/ (folder: run_artifacts.ObjectFolder)."""
    import obstore
    from obstore.exceptions import BaseError

    base = folder.key(f"{dag_id}/")
    modified: dict[str, datetime] = {}
    keys: dict[str, list[str]] = {}
    try:
        for chunk in obstore.list(folder.store, prefix=base, chunk_size=1000):
            for meta in chunk:
                run, _, rest = meta["path"][len(base) :].partition("/")
                if not rest or run == LATEST:
                    continue
                keys.setdefault(run, []).append(meta["path"])
                modified[run] = max(modified.get(run, meta["last_modified"]), meta["last_modified"])
        removed = []
        for run in policy.expired(modified, current):
            paths = keys[run]
            for start in range(0, len(paths), 1000):
                obstore.delete(folder.store, paths[start : start + 1000])
            removed.append(run)
    except (BaseError, OSError) as exc:
        raise folder.error(exc, f"cannot prune old runs under s3://{folder.bucket}/{base}") from None
    return removed


def apply(run, policy: Retention | None = None) -> dict[str, int]:
    """Remove the DAG's expired run folders, on every store this worker can see (run: RunArtifacts).

    Housekeeping never fails the run for a service that is down (logged, tried again next run); a
    retention setting that is not a number does fail it, naming the setting.
    """
    from include.catalog_publisher.defaults import project_home
    from include.catalog_publisher.run_artifacts import WORK_DIR

    policy = policy or Retention.from_env()
    if (policy.days is None and policy.runs is None) or run.dry_run:  # a dry run changes nothing
        return {"runs_removed": 0, "work_removed": 0}
    dag_id, current = run.relative.split("/", 1)
    removed, work = [], []
    if run.remote is None:
        removed = prune_local(run.dir.parent, current, policy)
    else:
        try:
            removed = prune_objects(run.remote, dag_id, current, policy)
        except ServiceUnavailableError as exc:
            log.warning("old runs were not pruned this time: %s", exc)
        work = prune_local(project_home() / WORK_DIR / dag_id, current, policy)
    if removed or work:
        message = "retention (%s): removed %d old runs %s and %d worker-local folders"
        log.info(message, policy, len(removed), removed[:5], len(work))
    return {"runs_removed": len(removed), "work_removed": len(work)}


def prune_work(run, policy: Retention | None = None) -> int:
    """Only this worker's data/work/<dag>/ folders (cheap: for tasks that run on any worker)."""
    from include.catalog_publisher.defaults import project_home
    from include.catalog_publisher.run_artifacts import WORK_DIR

    policy = policy or Retention.from_env()
    if run.remote is None or (policy.days is None and policy.runs is None) or run.dry_run:
        return 0
    dag_id, current = run.relative.split("/", 1)
    return len(prune_local(project_home() / WORK_DIR / dag_id, current, policy))
