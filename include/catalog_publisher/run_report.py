"""A run's report for people: what one publish_product_images or index_product_catalog run did.

The Airflow UI shows it as a tab of the run page (plugins/run_report_plugin.py). Everything comes
from what the run left behind, read when the page is asked for: the run's task instances and their
XCom (through Airflow's metadata database), and its artifacts (RunArtifacts: data/runs/<dag>/<run>/,
or object storage with $PUBLISHER_ARTIFACTS_URL), streamed, never copied. Nothing is stored.

Only the run's own artifacts are read: a location (from XCom) outside the run's folder is refused,
so a report can never be made to show another file of the api-server's host or bucket.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import ijson

from include.catalog_publisher import defaults
from include.catalog_publisher.catalog import product_id
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.run_artifacts import RunArtifacts, legacy_run_folder

PUBLISHER_DAG = "publish_product_images"
INDEXER_DAG = "index_product_catalog"
REBUILD_DAG = "rebuild_product_index"
REPORTED_DAGS = (PUBLISHER_DAG, INDEXER_DAG, REBUILD_DAG)
EXAMPLES = 10  # ids shown for each kind of mismatch
FAILURES_SHOWN = 100  # failed images listed with their reason (the count is always whole)
TEMPLATES = Path(__file__).with_name("templates")
FINISHED = ("success", "failed")


# ---------------------------------------------------------------------------------------------------
# What Airflow knows of a run


@dataclass
class TaskFacts:
    """One task instance: state, attempts and times (the last attempt's)."""

    task_id: str
    name: str  # the display name
    map_index: int
    state: str | None
    label: str | None
    start: datetime | None
    end: datetime | None
    tries: int

    @property
    def seconds(self) -> float | None:
        return (self.end - self.start).total_seconds() if self.start and self.end else None


@dataclass
class RunFacts:
    """A run as the metadata database has it: state, task instances, return values, asset events."""

    dag_id: str
    run_id: str
    state: str
    run_type: str
    start: datetime | None
    end: datetime | None
    conf: dict[str, Any]
    tasks: list[TaskFacts] = field(default_factory=list)
    xcoms: dict[tuple[str, int], Any] = field(default_factory=dict)  # (task id, map index) -> return value
    # Asset events the run emitted (with the runs they started), and those that started it.
    emitted: list[dict[str, Any]] = field(default_factory=list)
    consumed: list[dict[str, Any]] = field(default_factory=list)
    task_order: list[str] = field(default_factory=list)  # the DAG's task ids, upstream first
    refused: dict[str, str] = field(default_factory=dict)  # task id -> why it refused (XCom `refused`), if it did
    done_by: dict[str, str] = field(default_factory=dict)  # skipped task id -> the task that did its work

    def xcom(self, task_id: str, map_index: int = -1) -> Any:
        return self.xcoms.get((task_id, map_index))

    def instances(self, task_id: str) -> list[TaskFacts]:
        return sorted((t for t in self.tasks if t.task_id == task_id), key=lambda t: t.map_index)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def load_run(session, dag_id: str, run_id: str) -> RunFacts | None:
    """The run's facts from Airflow's metadata database (the api-server's session); None if there is no such run."""
    from airflow.models.asset import AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        return None
    facts = RunFacts(dag_id, run_id, str(run.state), str(run.run_type), run.start_date, run.end_date, run.conf or {})
    of_run = (TaskInstance.dag_id == dag_id) & (TaskInstance.run_id == run_id)
    instances = session.scalars(select(TaskInstance).where(of_run)).all()
    # A mapped task's display name may be stored on some of its instances only.
    names = {ti.task_id: ti.task_display_name for ti in instances if ti.task_display_name not in (None, ti.task_id)}
    for ti in instances:
        state = str(ti.state) if ti.state else None
        name = names.get(ti.task_id, ti.task_id)
        times = (ti.start_date, ti.end_date, ti.try_number)
        facts.tasks.append(TaskFacts(ti.task_id, name, ti.map_index, state, ti.rendered_map_index, *times))
    _load_xcoms(session, facts)
    from_run = (AssetEvent.source_dag_id == dag_id) & (AssetEvent.source_run_id == run_id)
    for event in session.scalars(select(AssetEvent).where(from_run)):
        started = [{"dag_id": r.dag_id, "run_id": r.run_id, "state": str(r.state)} for r in event.created_dagruns]
        facts.emitted.append({"extra": dict(event.extra or {}), "runs": started})
    for event in run.consumed_asset_events:
        source = {"dag_id": event.source_dag_id, "run_id": event.source_run_id}
        facts.consumed.append({"extra": dict(event.extra or {}), "source": source})
    facts.task_order = dag_task_order(session, dag_id)
    return facts


def _load_xcoms(session, facts: RunFacts) -> None:
    """The run's return values, and the reasons its tasks refused (a task that fails on purpose pushes one). A task
    that did the work of skipped ones pushed their results under `done_for`: they count as theirs."""
    from airflow.models.xcom import XComModel

    for key in ("return_value", "refused", "done_for"):
        for row in session.scalars(XComModel.get_many(run_id=facts.run_id, dag_ids=facts.dag_id, key=key)):
            value = XComModel.deserialize_value(row)
            if key == "refused":
                facts.refused[row.task_id] = value
            elif key == "done_for":
                facts.done_by.update(dict.fromkeys(value, row.task_id))
                facts.xcoms.update({(task_id, -1): result for task_id, result in value.items()})
            else:
                facts.xcoms[(row.task_id, row.map_index)] = value


def dag_task_order(session, dag_id: str) -> list[str]:
    """The DAG's task ids as the DAG orders them, upstream first (the report lists the tasks in the order they
    run); none when Airflow holds no serialized DAG of that id."""
    from graphlib import TopologicalSorter

    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id, session=session)
    if dag is None:
        return []
    return list(TopologicalSorter({tid: set(t.upstream_task_ids) for tid, t in dag.task_dict.items()}).static_order())


# ---------------------------------------------------------------------------------------------------
# Reading the run's own artifacts


class _Chunks(io.RawIOBase):
    """A binary file over an iterator of byte chunks (an object store download), read as it streams."""

    def __init__(self, chunks: Iterable[Any]) -> None:
        self._chunks: Iterator[Any] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = bytes(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading an artifact can raise: a missing or unreadable file or object, bad JSON, no S3 connection."""
    from obstore.exceptions import BaseError

    return (OSError, ValueError, ijson.JSONError, PublisherError, BaseError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class ArtifactReader:
    """Opens the artifacts of one run, local or on object storage, refusing any other location. What
    cannot be read is noted in `problems` (shown on the report) instead of failing the page."""

    def __init__(self, artifacts: RunArtifacts) -> None:
        self.artifacts = artifacts
        self.problems: list[str] = []

    def own(self, location: str) -> bool:
        """Whether `location` is inside this run's artifact folder (or the one a run made before run folders carried
        a hash had: its report reads the artifacts where that run left them)."""
        run = self.artifacts
        folders = [folder for folder in (run.relative, legacy_run_folder(run.dag_id, run.run_id)) if folder]
        if run.remote is not None:
            return any(location.startswith(run.remote.url(f"{folder}/")) for folder in folders)
        try:
            real = Path(location).resolve()
            return any(real.is_relative_to((run.dir.parent.parent / folder).resolve()) for folder in folders)
        except (OSError, ValueError):
            return False

    @contextlib.contextmanager
    def reading(self, what: str, location: str | None) -> Iterator[None]:
        """Notes an error raised inside as a problem of the report, and ends the block there."""
        from obstore.exceptions import NotFoundError

        try:
            yield
        except (FileNotFoundError, NotFoundError):  # obstore raises the builtin for a 404 on GET
            self.problems.append(f"{what}: {location} does not exist")
        except _read_errors() as exc:
            self.problems.append(f"{what}: cannot read {location} ({_reason(exc)})")

    def open(self, location: str | None, what: str) -> IO[bytes] | None:
        """A binary stream of the artifact; None (noted in `problems`) if missing, unreadable or not the run's."""
        if not location:
            return None
        location = str(location)
        if not self.own(location):
            self.problems.append(f"{what}: {location} is outside this run's artifact folder; not read")
            return None
        run = self.artifacts
        with self.reading(what, location):
            if run.remote is None:
                return open(location, "rb")  # noqa: SIM115 - the caller closes it
            import obstore

            result = obstore.get(run.remote.store, run.remote.key(location[len(run.remote.url("")) :]))
            return io.BufferedReader(_Chunks(result.stream(min_chunk_size=1024 * 1024)))
        return None

    def exists(self, location: str) -> bool | None:
        """True/False for a local artifact; None on object storage (not checked: one request each)."""
        if self.artifacts.remote is not None:
            return None
        return Path(location).is_file()

    def header(self, location: str | None, what: str, stop: str) -> dict[str, Any]:
        """The top-level fields of a JSON object before key `stop` (read without reaching the large list after it)."""
        found: dict[str, Any] = {}
        stream = self.open(location, what)
        if stream is None:
            return found
        key, builder = None, None
        with stream, self.reading(what, location):
            for prefix, event, value in ijson.parse(stream, use_float=True):
                if prefix == "" and event in ("map_key", "end_map"):
                    if key is not None:
                        found[key] = builder.value
                        key = None
                    if event == "end_map" or value == stop:
                        break
                    key, builder = value, ijson.ObjectBuilder()
                elif key is not None:
                    builder.event(event, value)
        return found

    def results(self, location: str | None, what: str) -> list[dict[str, Any]]:
        """The per-image results of one upload batch."""
        stream = self.open(location, what)
        results: list[dict[str, Any]] = []
        if stream is not None:
            with stream, self.reading(what, location):
                results = list(ijson.items(stream, "results.item", use_float=True))
        return results

    def mapped_ids(self, location: str | None) -> set[str] | None:
        """The product ids the URL mapping gives a URL to."""
        stream = self.open(location, "URL mapping")
        ids = None
        if stream is not None:
            with stream, self.reading("URL mapping", location):
                ids = {pid for pid, _ in ijson.kvitems(stream, "product_to_s3_url")}
        return ids

    def products(self, location: str | None, fmt: str) -> Iterator[Any]:
        """The products of the run's catalog, in the format update_catalog wrote it ('array', 'object' or 'jsonl')."""
        stream = self.open(location, "catalog")
        if stream is None:
            return
        with stream, self.reading("catalog", location):
            if fmt == "jsonl":
                for line in io.TextIOWrapper(stream, encoding="utf-8"):
                    if line.strip():
                        yield json.loads(line)
            else:
                yield from ijson.items(stream, "products.item" if fmt == "object" else "item", use_float=True)


# ---------------------------------------------------------------------------------------------------
# The reports


@dataclass
class Artifact:
    name: str
    location: str
    exists: bool | None = None  # None: not checked (object storage)


@dataclass
class BatchRow:
    """One mapped upload task: what it sent and how fast (its task's run time, start-up included)."""

    batch: int
    label: str
    state: str | None
    images: int
    uploaded: int | None
    failed: int | None
    bytes: int | None
    seconds: float | None

    @property
    def bytes_per_s(self) -> float | None:
        return self.bytes / self.seconds if self.seconds and self.bytes is not None else None

    @property
    def images_per_s(self) -> float | None:
        return self.uploaded / self.seconds if self.seconds and self.uploaded is not None else None


@dataclass
class PublishReport:
    facts: RunFacts
    images_dir: str | None = None
    date_folders: str = ""
    images_found: int | None = None
    images_bytes: int | None = None
    skipped_files: int | None = None
    skipped_examples: list[dict[str, str]] = field(default_factory=list)
    total: int | None = None
    uploaded: int | None = None
    uploaded_bytes: int | None = None
    unchanged: int | None = None
    failed: int | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    batches: list[BatchRow] = field(default_factory=list)
    catalog: dict[str, Any] | None = None
    without_image: list[str] = field(default_factory=list)
    without_product: list[str] = field(default_factory=list)
    kafka: dict[str, Any] | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    kind = "publish"

    @property
    def upload_seconds(self) -> float | None:
        """First upload task start to last end."""
        spans = [(t.start, t.end) for t in self.facts.instances("upload_batch") if t.start and t.end]
        return (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds() if spans else None


@dataclass
class IndexReport:
    facts: RunFacts
    indexed: dict[str, Any] | None = None  # the totals
    consumers: list[dict[str, Any]] = field(default_factory=list)  # each mapped consumer's own counts
    verified: dict[str, Any] | None = None
    catalogs: list[dict[str, Any]] = field(default_factory=list)  # each catalog verified, when there were several
    topics: list[str] = field(default_factory=list)
    dead_letter_topics: list[str] = field(default_factory=list)
    index: str | None = None
    catalog: str | None = None
    triggered_by: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    kind = "index"


@dataclass
class RebuildReport:
    """A rebuild or rollback: the plan, the fill, the verification (or why it refused), the swap."""

    facts: RunFacts
    plan: dict[str, Any] = field(default_factory=dict)
    filled: dict[str, Any] | None = None
    verified: dict[str, Any] | None = None
    swapped: dict[str, Any] | None = None
    discarded: str | None = None
    problems: list[str] = field(default_factory=list)

    kind = "rebuild"


def rebuild_report(facts: RunFacts) -> RebuildReport:
    """From the run's XCom; a refused verification or swap pushed its reason as `refused`."""
    report = RebuildReport(facts, plan=facts.xcom("plan") or {})
    report.filled, report.verified = facts.xcom("fill_version"), facts.xcom("verify_version")
    report.swapped = facts.xcom("swap_alias")
    report.discarded = (facts.xcom("discard_unswapped") or {}).get("discarded")
    for task_id in ("verify_version", "swap_alias"):
        refused = facts.refused.get(task_id)
        if refused:
            report.problems.append(refused)
    return report


def publish_report(facts: RunFacts, artifacts: RunArtifacts | None = None) -> PublishReport:
    """What a publish run found, uploaded, skipped, failed and published, from its XCom and artifacts."""
    run = artifacts or RunArtifacts(facts.dag_id, facts.run_id)
    reader = ArtifactReader(run)
    report = PublishReport(facts)
    manifest_at = _report_manifest(report, reader, run)
    planned = facts.xcom("plan_batches") or []
    report.batches = _batch_rows(facts, planned)
    mapping_at = _report_uploads(report, reader, run, planned)
    catalog = facts.xcom("update_catalog")
    if catalog:
        report.catalog = catalog
        if catalog.get("products_without_image") or catalog.get("images_without_product"):
            report.without_image, report.without_product = _mismatch_examples(reader, catalog, mapping_at)
    report.kafka = facts.xcom("publish_to_kafka")

    report.artifacts = _publish_artifacts(reader, run, manifest_at, planned, facts, mapping_at, catalog)
    report.problems = reader.problems
    return report


def _report_manifest(report: PublishReport, reader: ArtifactReader, run: RunArtifacts) -> str:
    """Fill in what build_manifest found, its shards added up (with examples of skipped files); return where the
    manifest is (the merged one; a run from before shards has one unmapped build_manifest, read the same way)."""
    shards = sorted((index, part) for (task, index), part in report.facts.xcoms.items() if task == "build_manifest")
    parts = [part for _, part in shards if part]
    first = parts[0] if parts else {}
    manifest_at = first.get("manifest") or run.location(run.manifest)
    report.images_dir, report.date_folders = first.get("images_dir"), first.get("date_folders", "")
    if parts:
        report.images_found = sum(p.get("images", 0) for p in parts)
        report.images_bytes = sum(p.get("bytes", 0) for p in parts)
        report.skipped_files = sum(p.get("skipped_files", 0) for p in parts)
    if report.skipped_files:
        header = reader.header(manifest_at, "manifest", stop="images")
        report.skipped_examples = list(header.get("skipped", []))[:EXAMPLES]
    return manifest_at


def _batch_rows(facts: RunFacts, planned: list[dict]) -> list[BatchRow]:
    """One row per planned batch: what its upload task returned, its state and, if it succeeded, its time."""
    uploads = {t.map_index: t for t in facts.instances("upload_batch") if t.map_index >= 0}
    rows = []
    for i, batch in enumerate(planned):
        task = uploads.get(i)
        done = facts.xcom("upload_batch", i) or {}
        label = task.label if task and task.label else f"batch {batch['batch']}"
        seconds = task.seconds if task and task.state == "success" else None
        row = BatchRow(
            batch["batch"],
            label,
            task.state if task else None,
            batch["images"],
            done.get("uploaded"),
            done.get("failed"),
            done.get("bytes"),
            seconds,
        )
        rows.append(row)
    return rows


def _report_uploads(report: PublishReport, reader: ArtifactReader, run: RunArtifacts, planned: list[dict]) -> str:
    """Fill in the upload totals (from the merged URL mapping) and the failed images; return where the mapping is."""
    facts = report.facts
    merged = facts.xcom("merge_url_mapping")
    mapping_at = (merged or {}).get("url_mapping") or run.location(run.url_mapping)
    if merged is None and any(t.state == "failed" for t in facts.instances("merge_url_mapping")):
        # The mapping is written before the task fails on too many failed images.
        merged = reader.header(mapping_at, "URL mapping", stop="product_to_s3_url")
    counts = merged or {}
    report.total, report.uploaded, report.failed = (
        counts.get("total_images"),
        counts.get("uploaded_images"),
        counts.get("failed_images"),
    )
    report.unchanged, report.uploaded_bytes = counts.get("skipped_images"), counts.get("uploaded_bytes")
    report.failures = _failures(reader, run, planned, facts)
    if report.failed is None and report.failures:
        report.failed = len(report.failures)
    return mapping_at


def _failures(reader: ArtifactReader, run: RunArtifacts, planned: list[dict], facts: RunFacts) -> list[dict[str, str]]:
    """Each failed image with its reason, from the results of the batches that had failures.

    A batch whose task failed (S3 errors left after its retries) returned nothing, but its results
    file was written before it failed: on a local location it is read from there.
    """
    failures: list[dict[str, str]] = []
    for i, batch in enumerate(planned):
        done = facts.xcom("upload_batch", i)
        if done is not None and not done.get("failed"):
            continue
        if done is None and run.remote is not None:
            continue  # a failed task's results were never uploaded
        location = done["results"] if done else run.location(run.results(batch["batch"]))
        if done is None and not Path(location).is_file():
            continue
        for result in reader.results(location, f"results of batch {batch['batch']}"):
            if result.get("status") == "failed":
                failures.append(
                    {
                        "product_id": result.get("product_id", ""),
                        "file_path": result.get("file_path", ""),
                        "reason": result.get("error", ""),
                    }
                )
                if len(failures) >= FAILURES_SHOWN:
                    return failures
    return failures


def _mismatch_examples(reader: ArtifactReader, catalog: dict[str, Any], mapping_at: str) -> tuple[list[str], list[str]]:
    """Examples of products without image and of images without product, from the run's catalog and mapping."""
    mapped = reader.mapped_ids(mapping_at)
    if mapped is None:
        return [], []
    without_image: list[str] = []
    catalog_ids: set[str] = set()
    want_orphans = bool(catalog.get("images_without_product"))
    for product in reader.products(catalog.get("catalog"), catalog.get("format", "array")):
        pid = product_id(product)
        if pid is None:
            continue
        if pid not in mapped and len(without_image) < EXAMPLES:
            without_image.append(pid)
        if want_orphans:
            catalog_ids.add(pid)
        elif len(without_image) >= EXAMPLES:
            break
    without_product = sorted(mapped - catalog_ids)[:EXAMPLES] if want_orphans else []
    return without_image, without_product


def _publish_artifacts(reader, run, manifest_at, planned, facts, mapping_at, catalog) -> list[Artifact]:
    def artifact(name: str, location: str) -> Artifact:
        return Artifact(name, location, reader.exists(location))

    found = [artifact("Manifest", manifest_at)]
    if run.remote is not None or Path(run.location(run.unchanged)).is_file():
        found.append(artifact("Images unchanged in the bucket (results)", run.location(run.unchanged)))
    for i, batch in enumerate(planned):
        found.append(artifact(f"Batch {batch['batch']}: image list", batch["path"]))
        done = facts.xcom("upload_batch", i)
        found.append(
            artifact(
                f"Batch {batch['batch']}: results",
                done["results"] if done else run.location(run.results(batch["batch"])),
            )
        )
    found.append(artifact("URL mapping", mapping_at))
    found.append(artifact("Catalog with S3 URLs", (catalog or {}).get("catalog") or run.location(run.catalog)))
    return found


def index_report(facts: RunFacts) -> IndexReport:
    """What an index run consumed, indexed and dead-lettered, and what it verified, from its XCom."""
    report = IndexReport(facts)
    report.indexed = facts.xcom("indexing_totals") or facts.xcom("index_from_kafka")  # (its name before 2026-12)
    indexed = report.indexed or {}
    for task in facts.instances("index_partitions"):  # consumers side by side, when the DAG maps them
        done = facts.xcom("index_partitions", task.map_index) or {}
        counts = {name: done.get(name) for name in ("consumed", "indexed", "deleted", "dead_lettered")}
        label = task.label or f"consumer {task.map_index}"
        report.consumers.append({"label": label, "state": task.state, "seconds": task.seconds, **counts})
    report.verified = facts.xcom("verify_index")
    verified = report.verified or {}
    if len(verified.get("catalogs") or []) > 1:
        report.catalogs = verified["catalogs"]
    report.triggered_by = facts.consumed
    published = facts.consumed[-1]["extra"] if facts.consumed else {}
    topic = indexed.get("topic") or published.get("topic") or facts.conf.get("topic")
    report.topics = list(indexed.get("topics") or ([topic] if topic else []))
    report.dead_letter_topics = [t + defaults.DEAD_LETTER_SUFFIX for t in report.topics]
    report.index = indexed.get("index") or verified.get("index") or facts.conf.get("index")
    report.catalog = verified.get("catalog") or published.get("catalog") or facts.conf.get("catalog_file")
    if verified.get("mapping_drift"):
        from include.catalog_publisher.indexer import MAPPING_FIX

        fields = len(verified["mapping_drift"])
        report.problems.append(f"The mapping of index {report.index} differs in {fields} fields; {MAPPING_FIX}")
    return report


# ---------------------------------------------------------------------------------------------------
# The page


def batch_chart(batches: list[BatchRow], width: int = 720, height: int = 240) -> dict[str, Any] | None:
    """Geometry of the per-batch chart: a bar of the bytes each batch uploaded, a line of its throughput."""
    if not batches:
        return None
    return _BatchChart(batches, width, height).geometry()


class _BatchChart:
    """The per-batch chart's frame and scales, shared by the bar and the throughput point of each batch."""

    left, right, top, bottom = 56, 64, 16, 40  # margins around the plot

    def __init__(self, batches: list[BatchRow], width: int, height: int) -> None:
        self.batches, self.width, self.height = batches, width, height
        self.plot_w, self.plot_h = width - self.left - self.right, height - self.top - self.bottom
        self.top_bytes = max((b.bytes or 0 for b in batches), default=0) or 1
        self.rates = [b.bytes_per_s for b in batches]
        self.top_rate = max((r or 0 for r in self.rates), default=0) or 1.0
        self.size_unit, self.size_scale = ("MB", 1e6) if self.top_bytes >= 1e6 else ("kB", 1e3)
        self.rate_unit, self.rate_scale = ("MB/s", 1e6) if self.top_rate >= 1e6 else ("kB/s", 1e3)
        self.slot = self.plot_w / len(batches)
        self.every = max(1, round(len(batches) / 16))  # at most ~16 axis labels

    def geometry(self) -> dict[str, Any]:
        """What the template draws: the frame, the axes' units and tops, the bars and the throughput line."""
        bars = [self.bar(i, b, rate) for i, (b, rate) in enumerate(zip(self.batches, self.rates, strict=True))]
        points = [self.point(bar["cx"], rate) for bar, rate in zip(bars, self.rates, strict=True) if rate is not None]
        return {
            "width": self.width,
            "height": self.height,
            "left": self.left,
            "top": self.top,
            "plot_w": self.plot_w,
            "plot_h": self.plot_h,
            "bottom_y": self.top + self.plot_h,
            "right_x": self.left + self.plot_w,
            "size_unit": self.size_unit,
            "rate_unit": self.rate_unit,
            "top_size": self.top_bytes / self.size_scale,
            "top_rate": self.top_rate / self.rate_scale,
            "bars": bars,
            "points": points,
            "line": " ".join(f"{p['x']},{p['y']}" for p in points),
        }

    def bar(self, i: int, b: BatchRow, rate: float | None) -> dict[str, Any]:
        """The bar of the i-th batch: as high as the bytes it uploaded, marked failed if anything failed."""
        h = self.plot_h * (b.bytes or 0) / self.top_bytes
        x = self.left + i * self.slot
        return {
            "x": round(x + self.slot * 0.15, 1),
            "y": round(self.top + self.plot_h - h, 1),
            "w": round(max(self.slot * 0.7, 1), 1),
            "h": round(h, 1),
            "failed": bool(b.failed) or b.state not in ("success", None),
            "label": str(b.batch) if i % self.every == 0 else "",
            "cx": round(x + self.slot / 2, 1),
            "title": self.title(b, rate),
        }

    def title(self, b: BatchRow, rate: float | None) -> str:
        """A bar's tooltip: the batch's bytes, and its throughput, failures and task state when there are any."""
        title = f"{b.label}: {(b.bytes or 0) / self.size_scale:.1f} {self.size_unit}"
        if rate is not None:
            title += f", {rate / self.rate_scale:.1f} {self.rate_unit}, {b.images_per_s:.1f} images/s"
        if b.failed:
            title += f", {b.failed} failed"
        if b.state != "success":
            title += f", task {b.state or 'not started'}"
        return title

    def point(self, cx: float, rate: float) -> dict[str, float]:
        """The throughput line's point above a bar's centre."""
        return {"x": cx, "y": round(self.top + self.plot_h - self.plot_h * rate / self.top_rate, 1)}


@functools.cache
def _environment():
    import jinja2

    loader = jinja2.FileSystemLoader(TEMPLATES)
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["mb"] = lambda n: "–" if n is None else f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"
    env.filters["speed"] = lambda r: "–" if r is None else env.filters["mb"](r) + "/s"
    env.filters["num"] = lambda n: "–" if n is None else f"{n:,}"
    env.filters["secs"] = lambda s: "–" if s is None else f"{s:,.1f} s"
    env.filters["rate"] = lambda r, unit: "–" if r is None else f"{r:,.2f} {unit}" if r < 100 else f"{r:,.0f} {unit}"
    env.filters["when"] = lambda d: "–" if d is None else d.strftime("%Y-%m-%d %H:%M:%S %Z")
    return env


def render(report: PublishReport | IndexReport | RebuildReport) -> str:
    chart = batch_chart(report.batches) if isinstance(report, PublishReport) else None
    order = {task: i for i, task in enumerate(report.facts.task_order)}
    tasks = sorted(report.facts.tasks, key=lambda t: (order.get(t.task_id, len(order)), t.task_id, t.map_index))
    return _environment().get_template("run_report.html").render(report=report, chart=chart, tasks=tasks)


def render_message(title: str, message: str) -> str:
    return _environment().get_template("run_report.html").render(report=None, chart=None, title=title, message=message)


def page(session, dag_id: str, run_id: str) -> tuple[int, str]:
    """(HTTP status, HTML) of the report of one run, for the plugin."""
    if dag_id not in REPORTED_DAGS:
        reported = " and ".join(REPORTED_DAGS)
        return 404, render_message("No run report", f"Run reports exist for {reported}, not for {dag_id}.")
    facts = load_run(session, dag_id, run_id)
    if facts is None:
        return 404, render_message("No such run", f"{dag_id} has no run {run_id}.")
    try:
        reports = {PUBLISHER_DAG: publish_report, INDEXER_DAG: index_report, REBUILD_DAG: rebuild_report}
        report = reports[dag_id](facts)
    except PublisherError as exc:  # a misconfigured artifact location, say
        return 500, render_message("The run report cannot be made", str(exc))
    return 200, render(report)
