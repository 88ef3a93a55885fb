"""The bodies of the publish_product_images tasks: steps wired to run artifacts and connections.

Each function takes and returns only paths and small counts (what XCom may carry) and calls the
same step functions the runbook scripts call. A PublisherError fails the task at once and a
ServiceUnavailableError is retried: the DAGs' retry policy (dag_defaults.RETRY_POLICY) decides.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import ijson
from airflow.sdk.exceptions import AirflowSkipException, DownstreamTasksSkipped

from include.catalog_publisher import (
    airflow_clients,
    bucket_images,
    catalog_reuse,
    defaults,
    published_state,
    removals,
    retention,
    settings,
    uploaded_images,
)
from include.catalog_publisher.allowed_inputs import confine, confine_images
from include.catalog_publisher.batching import Batch, as_xcom, write_planned
from include.catalog_publisher.catalog import (
    Held,
    read_catalog_ids,
    refuse_products_without_id,
    rewrite_catalog,
)
from include.catalog_publisher.catalog_changes import (
    already_published,
    catalog_digest,
    catalog_messages,
    publish_changes,
)
from include.catalog_publisher.date_folders import select_folders
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.files import read_json, write_json
from include.catalog_publisher.kafka_publish import release_producer
from include.catalog_publisher.manifest import (
    Shard,
    iter_manifest_images,
    merge_manifests,
    previous_entries,
    product_id_of,
    read_manifest_header,
    write_manifest,
)
from include.catalog_publisher.run_artifacts import RunArtifacts, fetch_artifact, published_state_name
from include.catalog_publisher.s3_store import Encryption
from include.catalog_publisher.upload import plan_upload, upload_batch_file
from include.catalog_publisher.url_mapping import (
    build_url_mapping,
    iter_batch_results,
    load_image_dates,
    load_url_mapping,
    rewrite_digest,
)

log = logging.getLogger(__name__)

WHOLE_FOLDER = Shard(0, 1)  # a manifest built by one task


def build_manifest(
    run: RunArtifacts,
    images_dir: str,
    layout: str,
    start: datetime | None,
    end: datetime | None,
    shard: Shard = WHOLE_FOLDER,
    force_reupload: bool = False,
) -> dict[str, Any]:
    """One shard of the run's manifest: of the whole images folder, or of the date folders of the run's data
    interval (days without a folder give no images; the run still publishes the catalog's changes).
    Shards are mapped tasks, on any worker; plan_batches merges them. force_reupload reads every file again.
    First (in the first shard), the DAG's old run folders past the retention settings are removed (retention.py)."""
    if shard.index == 0:
        retention.apply(run)
    where = confine_images(images_dir, "images_dir")
    bucket = _images_bucket(where) if bucket_images.in_bucket(where) else None
    root = where if bucket else Path(where)
    list_folders = (lambda: bucket_images.date_folders(bucket.client, bucket.location)) if bucket else None
    folders = select_folders(root, layout, start, end, list_folders)
    sharded = shard.count > 1
    part = run.manifest_part(shard) if sharded else run.manifest  # one shard writes the run's manifest
    last = (run.fetch_latest(_latest_part_name(shard)) if sharded else None) or run.fetch_latest(defaults.MANIFEST_FILE)
    known = {} if force_reupload else previous_entries(last, root)
    summary = write_manifest(root, part, folders, known=known, shard=shard if sharded else None, bucket=bucket)
    location = run.save(part)
    if sharded:
        run.publish_latest(part, _latest_part_name(shard))  # the next run's digests of this shard's unchanged files
    return {
        "part": location,
        "shard": shard.label,
        "images_dir": str(root),
        "date_folders": ",".join(folders) if folders is not None else "",
        "images": summary.total_images,
        "bytes": summary.total_size_bytes,
        "skipped_files": summary.skipped_files,
    }


def _images_bucket(location: str) -> bucket_images.BucketReader:
    """The scan's way into an s3:// images_dir, through $PUBLISHER_IMAGES_CONN_ID: an obstore store of its bucket
    (the listing and the reads) and a boto3 client, made if needed (bucket_images.BucketReader)."""
    parsed = bucket_images.BucketLocation.parse(location)
    store = airflow_clients.s3_store(parsed.bucket, settings.value(settings.IMAGES_CONN_ID))[1]
    return bucket_images.BucketReader(parsed, store, _images_client)


def _images_client(connections: int = 10):
    """A boto3 client of the images' connection ($PUBLISHER_IMAGES_CONN_ID)."""
    return airflow_clients.s3_client(settings.value(settings.IMAGES_CONN_ID), connections)


def _bucket_source(images_dir: str, concurrency: int) -> bucket_images.BucketSource | None:
    """How upload_batch reads a manifest's images from a bucket (None for a folder): copies on the server through
    the upload's own connection when the images' connection is that one, else a store of the images' connection."""
    if not bucket_images.in_bucket(images_dir):
        return None
    location = bucket_images.BucketLocation.parse(images_dir)
    conn = settings.value(settings.IMAGES_CONN_ID)
    if conn == airflow_clients.AWS_CONN_ID:
        return bucket_images.BucketSource(location, copy_client=_images_client(concurrency))
    return bucket_images.BucketSource(location, store=airflow_clients.s3_store(location.bucket, conn)[1])


def _latest_part_name(shard: Shard) -> str:
    return defaults.MANIFEST_FILE.replace(".json", f".shard-{shard.index + 1}-of-{shard.count}.json")


def plan_batches(
    run: RunArtifacts,
    parts: list[dict[str, Any]],
    batch_size: int,
    max_batches: int,
    bucket: str,
    prefix: str,
    force_reupload: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Merge the shards' manifests into the run's manifest, then batch it, leaving out the images the bucket
    holds unchanged (beside one listing of the run's scope, unless forced): upload.plan_upload, as the runbook
    plans. Returns the batches and the manifest's summary (what build_manifest returned when it was one task)."""
    manifest = _merged_manifest(run, parts)
    if manifest["images"] == 0:  # date folders, all missing or empty: a day without images
        return [], manifest
    target, store = airflow_clients.s3_store(bucket)
    days = manifest["date_folders"].split(",") if manifest["date_folders"] else None
    unchanged_file, _, batches = plan_upload(
        store,
        target,
        run.manifest,
        run.dir,
        prefix,
        batch_size,
        force_reupload,
        days=days,
        max_batches=max_batches,
        unchanged_file=run.unchanged,
    )
    if unchanged_file:
        run.save(Path(unchanged_file))
    for batch in batches:
        batch.path = run.save(Path(batch.path))
    return as_xcom(batches), manifest


def skip_after_planning(run: RunArtifacts, manifest: dict[str, Any], params: dict[str, Any], ti) -> NoReturn:
    """Nothing to upload: skip the uploads from here, as ShortCircuitOperator does (left to expand to zero batches,
    they would cost the run an idle scheduling loop). With nothing to publish or delete either
    (finish_without_uploads), the tasks after are skipped too, their results pushed under the XCom key done_for."""
    done = finish_without_uploads(run, manifest, params)
    if done is None:
        raise DownstreamTasksSkipped(tasks=["upload_batch"])
    ti.xcom_push(key="done_for", value=done)
    raise DownstreamTasksSkipped(tasks=["upload_batch", *done, "delete_removed_images"])


def finish_without_uploads(run: RunArtifacts, manifest: dict[str, Any], params: dict[str, Any]) -> dict | None:
    """A run with nothing to upload goes on here, in the task that found so: the URL mapping and the catalog (the
    steps of merge_url_mapping and update_catalog, whose outputs the run keeps either way), then whether the topic
    holds that catalog already, the indexer has all of it, and no removal is due or to mark. If so, the results
    those tasks and publish_to_kafka would have returned (the DAG skips them: a day with nothing to do costs two
    tasks, not six). None when something is left to do, or a step here failed: the tasks run as usual (reusing the
    catalog kept here), and the one whose step fails fails under its own name, retried as its failure says."""
    if params["republish_all"]:
        return None
    bucket, prefix = params["bucket"], params["prefix"] or ""
    try:
        mapping = merge_url_mapping(run, [], bucket, prefix, params["public_base_url"], params["max_failed_percent"])
        catalog = update_catalog(run, params["catalog_file"], mapping, manifest, params)
        state = latest_published_state(run, params["topic"])  # read once: both questions need it
        published = nothing_to_publish(run, catalog, state, params["accept_partition_change"])
        if published is None or removals_left(run, manifest, catalog, params, state):
            return None
    except Exception as exc:  # noqa: BLE001 - a shortcut only: its steps' own tasks meet the failure and judge it
        log.warning("the run goes on with its tasks, which will meet this again: %s: %s", type(exc).__name__, exc)
        return None
    log.info("nothing to upload, publish or delete: the catalog is on topic %s as it is now", params["topic"])
    return {"merge_url_mapping": mapping, "update_catalog": catalog, "publish_to_kafka": published}


def latest_published_state(run: RunArtifacts, topic: str) -> published_state.PublishedState | None:
    """The topic's published state as the last publish kept it (None when there is none to trust)."""
    return published_state.load(run.fetch_latest(f"data/{published_state_name(topic)}"), topic)


def nothing_to_publish(run: RunArtifacts, catalog: dict[str, Any], saved, accept_partition_change: bool):
    """What publish_to_kafka would return for a catalog the topic holds already (catalog_changes.already_published)
    while the indexer's group has every message of the topic; None when the publish has work or an announcement to
    make. `saved`: latest_published_state. A dated catalog counts only when it was the last rewrite's
    (catalog_reuse): its images are in the uploaded images record then, which the publish would otherwise keep."""
    if saved is None:
        log.info("no published state to compare the catalog with: the publish compares it with the topic")
        return None
    topic = saved.topic
    digest = catalog_digest(run.fetch(catalog["catalog"]), run.fetch(catalog["catalog_ids"]))
    if not saved.settled_on(digest):
        log.info("the catalog is not the one last published to topic %s in full: the publish compares it", topic)
        return None  # no Kafka call for a catalog that changed
    if catalog.get("uploaded_images") and not catalog["reused"]:
        log.info("the uploaded images record changed since the last rewrite: the publish keeps it")
        return None
    producer, where = airflow_clients.kafka_producer()
    try:
        accept = accept_partition_change
        outcome = already_published(producer, topic, saved, digest, where=where, accept_partition_change=accept)
    finally:
        release_producer(producer)
    if outcome is None:
        return None
    behind = indexer_backlog(topic)
    if behind != 0:
        log.info("the indexer's group is behind topic %s (%s messages): the publish announces again", topic, behind)
        return None
    return {**outcome.as_dict(), "dry_run": run.dry_run, "indexer_behind": 0}


def _merged_manifest(run: RunArtifacts, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's manifest, merged from its shards' (one shard wrote it itself), published as the latest when it
    holds images. NoImagesError when no shard found an image in a flat folder, or in date folders that hold files
    which are not images (say so); date folders missing or empty give an empty manifest."""
    first = parts[0]
    if len(parts) == 1:  # one shard: it wrote the run's manifest itself
        location = first["part"]
        run.fetch(location)
        totals = {key: first[key] for key in ("images", "bytes", "skipped_files")}
    else:
        summary = merge_manifests([run.fetch(part["part"]) for part in parts], run.manifest)
        location = run.save(run.manifest)
        totals = {"images": summary.total_images, "bytes": summary.total_size_bytes}
        totals["skipped_files"] = summary.skipped_files
    if totals["images"]:  # a day without images leaves the latest (the next scan's known files) as it was
        run.publish_latest(run.manifest, defaults.MANIFEST_FILE)
    return {"manifest": location, "images_dir": first["images_dir"], "date_folders": first["date_folders"], **totals}


def upload_batch(
    run: RunArtifacts,
    manifest: dict[str, Any],
    batch: dict[str, Any],
    bucket: str,
    prefix: str,
    concurrency: int,
    encryption: Encryption | None = None,
) -> dict[str, Any]:
    """Upload one batch. Images S3 refused for good are recorded (merge_url_mapping counts them against
    max_failed_percent); if S3 could not serve some (5xx, throttling, no answer after the client's
    retries) the task fails with ServiceUnavailableError, so Airflow retries it, resuming from the journal."""
    info = Batch(**batch)
    retention.prune_work(run)  # this worker's own old data/work folders (any worker may run a batch)
    results = run.results(info.batch)
    if run.dry_run:
        log.info("dry run: %s would be uploaded (listed in %s)", info.label, results)
        write_planned(run.fetch(info.path), prefix, results)
        return {"batch": info.batch, "results": run.save(results), "uploaded": 0, "failed": 0, "bytes": 0}
    target, store = airflow_clients.s3_store(bucket, encryption=encryption)
    options = {"concurrency": concurrency, "encryption": encryption}
    options["source"] = _bucket_source(manifest["images_dir"], concurrency)
    batch_file, images_dir = str(run.fetch(info.path)), manifest["images_dir"]
    outcome = upload_batch_file(store, target, batch_file, images_dir, prefix, str(results), **options)
    log.info("%s: %d uploaded (%d resumed), %d failed", info.label, outcome.uploaded, outcome.resumed, outcome.failed)
    if outcome.retryable_failures:
        raise ServiceUnavailableError(
            f"{outcome.retryable_failures} of {info.images} images in batch {info.batch} failed with S3 errors "
            f"(listed above, and in {results}); a retry uploads only those"
        )
    return {
        "batch": info.batch,
        "results": run.save(results),
        "uploaded": outcome.uploaded,
        "failed": outcome.failed,
        "bytes": outcome.bytes,
    }


def merge_url_mapping(
    run: RunArtifacts,
    batch_results: list[dict[str, Any]],
    bucket: str,
    prefix: str,
    public_base_url: str,
    max_failed_percent: float,
) -> dict[str, Any]:
    """Write the run's URL mapping; fail after writing it when too many images failed.

    Skipped, leaving the latest mapping as it was, when the run has no manifest (its folder removed by retention
    before the task was cleared and run again): this task runs whenever no upstream failed (none_failed)."""
    if not run.has(run.manifest):
        raise AirflowSkipException(
            "this run has no manifest (nothing to publish); the latest URL mapping is left as is"
        )
    target = airflow_clients.s3_target(bucket)
    unchanged = run.fetch(run.location(run.unchanged), missing_ok=True)
    results_files = [unchanged] if unchanged else []
    results_files += [run.fetch(r["results"]) for r in batch_results]
    mapping = build_url_mapping(iter_batch_results(results_files), target, prefix, public_base_url or None)
    write_json(run.url_mapping, mapping)
    summary = {
        k: mapping[k] for k in ("total_images", "uploaded_images", "skipped_images", "failed_images", "uploaded_bytes")
    }
    summary["url_mapping"] = run.save(run.url_mapping)
    summary["urls_digest"] = rewrite_digest(mapping)  # update_catalog: the same URLs as its last rewrite?
    if mapping["total_images"]:  # a day without images leaves the latest as it was
        run.publish_latest(run.url_mapping, defaults.URL_MAPPING_FILE)
    failed_percent = 100.0 * mapping["failed_images"] / max(mapping["total_images"], 1)
    if failed_percent > max_failed_percent:
        raise PublisherError(
            f"{mapping['failed_images']} of {mapping['total_images']} images failed "
            f"({failed_percent:.1f}% > max_failed_percent {max_failed_percent}); "
            f"reasons are under 'failures' in {run.url_mapping}. Fix them and re-run, or raise max_failed_percent"
        )
    return summary


def update_catalog(
    run: RunArtifacts,
    catalog_file: str,
    mapping: dict[str, Any],
    manifest: dict[str, Any],
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's catalog: every product of the catalog file with its image. A flat run takes the images of its URL
    mapping and leaves out the products it cannot vouch for (held_products); a run over date folders gives each
    product its newest image across all the days uploaded so far (catalog_images). The last rewrite's catalog is
    reused when its catalog file, images and held products were the same (catalog_reuse.py). `params`: the run's
    bucket, prefix and public_base_url (a dated run's)."""
    source = fetch_artifact(confine(catalog_file, "catalog_file"), run.dir / "inputs")
    mapping_file = run.fetch(mapping["url_mapping"])
    dated = bool(manifest.get("date_folders"))
    if dated:
        images = catalog_images(run, mapping_file, params or {})
        uploaded_images.save(run.catalog_images, images)
        record = {"bucket": images.bucket, "prefix": images.prefix, "url_base": images.url_base}
        urls_digest = rewrite_digest(images.as_mapping())  # what the rewrite takes (not the record's scan times)
        del images  # the rewrite reads the file again, compactly (UrlTable): not two copies in memory
        images_file, held = run.catalog_images, Held()
    else:
        images_file, urls_digest = mapping_file, mapping.get("urls_digest")  # absent from an older run's mapping
        held = held_products(run.fetch(manifest["manifest"]), mapping, mapping_file)
    selection = f"{dated}\0{held.unmapped}\0" + "\0".join(sorted(held.products))
    inputs = catalog_reuse.inputs_digest(source, urls_digest, selection) if urls_digest else None
    reused = catalog_reuse.reuse(run, inputs) if inputs else None
    result = reused or _rewrite(run, catalog_file, source, images_file, dated, held)
    locations = {"catalog": run.save(run.catalog), "catalog_ids": run.save(run.catalog_ids)}
    if dated:  # what the publish keeps of it, and where
        locations["catalog_images"] = run.save(run.catalog_images)
        locations["uploaded_images"] = record
        locations["url_mapping"] = mapping["url_mapping"]
    run.publish_latest(run.catalog, defaults.UPDATED_CATALOG_FILE)
    if inputs:
        catalog_reuse.remember(run, inputs, result, locations)
    return {**result, **locations, "reused": reused is not None}


def catalog_images(run: RunArtifacts, mapping_file: Path, params: dict[str, Any]) -> uploaded_images.UploadedImages:
    """The newest image of each product across the days uploaded so far: the kept record (rebuilt from a listing
    of the bucket when it cannot be trusted) with this run's images taken."""
    bucket, prefix, public_base_url = params["bucket"], params["prefix"] or "", params["public_base_url"] or None
    target = airflow_clients.s3_target(bucket)
    base = uploaded_images.url_base(target, prefix, public_base_url)
    kept = uploaded_images.load(run.fetch_latest(uploaded_images.state_name(bucket)), bucket, prefix, base)
    if kept is None:
        target, store = airflow_clients.s3_store(bucket)
        checksum_of = uploaded_images.head_checksum(airflow_clients.s3_client(), bucket)
        kept = uploaded_images.rebuild(store, target, prefix, public_base_url, checksum_of)
    kept.take(read_json(mapping_file, "URL mapping"))
    return kept


def held_products(manifest_file: Path, mapping: dict[str, Any], mapping_file: Path) -> Held:
    """What a flat run leaves at its live version rather than publish without its image: products whose file the
    scan skipped as unreadable or not (yet) an image, caught mid-write, or whose upload failed; and, when the scan
    could not read a file or folder at all, every product without an image this run (which products a folder held
    is unknown). A duplicate's product has its other file, so it is not held."""
    products, unreadable = skipped_products(manifest_file)
    if mapping.get("failed_images"):
        with open(mapping_file, "rb") as f:
            products |= {failure["product_id"] for failure in ijson.items(f, "failures.item")}
    return Held(frozenset(products), unreadable)


def skipped_products(manifest_file: Path) -> tuple[set[str], str]:
    """(the products of the files the scan skipped for a reason that may pass, the first file or folder it could
    not read at all, "" if none): what a flat run holds at its live version, and whose objects it keeps."""
    skipped = read_manifest_header(manifest_file).get("skipped", [])
    unreadable = next((s["file_path"] for s in skipped if str(s.get("reason", "")).startswith("cannot read")), "")
    products = {product_id_of(Path(s["file_path"]).name) for s in skipped if not _says_nothing(s.get("reason", ""))}
    return products, unreadable


def _says_nothing(reason: str) -> bool:
    """A skip that says nothing of its product's image: a hidden file, a duplicate (the product has another)."""
    return reason.startswith(("hidden file", "duplicate image"))


def _rewrite(run: RunArtifacts, catalog_file: str, source: Path, images_file: Path, dated: bool, held: Held) -> dict:
    """Rewrite the catalog with the images' URLs into the run's catalog and id list; return its counts."""
    dates = load_image_dates(images_file) if dated else None
    urls = load_url_mapping(images_file, checksums=True)
    summary = rewrite_catalog(source, urls, run.catalog, image_dates=dates, ids_file=run.catalog_ids, held=held)
    refuse_products_without_id(summary, catalog_file, "nothing was published")
    result = summary.as_dict()
    examples = result.pop("examples")
    return {**result, "held_examples": examples["held"]} if summary.held else result


def publish_to_kafka(
    run: RunArtifacts,
    catalog: dict[str, Any],
    topic: str,
    *,
    manifest: dict[str, Any] | None = None,
    republish_all: bool = False,
    max_deletions: int | None = None,
    accept_partition_change: bool = False,
) -> dict[str, Any]:
    """Publish what changed since the last publish to the topic, and tombstones for the removed products;
    then keep the topic's new published state beside the run's artifacts (its latest copy for the next run).
    A dated run first keeps its images in the uploaded images record (record_uploaded_images)."""
    # The producer first: librdkafka can take 0.5 s to get its idempotent producer id, meanwhile the files are read.
    producer, where = airflow_clients.kafka_producer()
    try:
        state_name = published_state_name(topic)
        saved = latest_published_state(run, topic)
        catalog_file, ids_file = run.fetch(catalog["catalog"]), run.fetch(catalog["catalog_ids"])
        catalog_ids = read_catalog_ids(ids_file)
        newest = record_uploaded_images(run, catalog, manifest, catalog_ids) if catalog.get("uploaded_images") else None
        options = {"republish_all": republish_all, "max_removals": max_deletions, "dry_run": run.dry_run}
        options["accept_partition_change"], options["newest_days"] = accept_partition_change, newest
        options["catalog"] = catalog_digest(catalog_file, ids_file)
        products = catalog_messages(catalog_file, catalog.get("format"))  # JSON Lines in a .json file
        outcome, state = publish_changes(producer, products, topic, catalog_ids, saved, where=where, **options)
    finally:
        release_producer(producer)
    if run.dry_run:
        return outcome.as_dict()
    published_state.save(run.published_state(topic), state)
    run.save(run.published_state(topic))
    run.publish_latest(run.published_state(topic), f"data/{state_name}")
    return {**outcome.as_dict(), "indexer_behind": indexer_backlog(topic)}


def returning_before_deletion(result: dict[str, Any], params: dict[str, Any], ti) -> dict[str, Any]:
    """publish_to_kafka's return value. With delete_removed_images off, the deletion is skipped from here (the
    value pushed first, as a return would), so it starts no task process only to find it has nothing to do."""
    if params["delete_removed_images"]:
        return result
    ti.xcom_push(key="return_value", value=result)
    raise DownstreamTasksSkipped(tasks=["delete_removed_images"])


def record_uploaded_images(
    run: RunArtifacts, catalog: dict[str, Any], manifest: dict[str, Any] | None, catalog_ids: set[str]
) -> dict[str, str]:
    """Take the run's images into the latest uploaded images record and keep it, before anything is sent (one
    publish at a time: no run's images are lost to another's); return each product's newest day. The run's catalog
    came from the record as update_catalog read it: a product whose image there is older than the record's now
    (another run kept a newer one since) is not sent by this run (catalog_changes._changes); the run that kept the
    newer one sends it, or the next run does."""
    where = catalog["uploaded_images"]
    latest = _latest_record(run, where)
    if latest is None:  # none kept (or untrusted): update_catalog's, rebuilt from the bucket with this run's images
        latest = uploaded_images.load(run.fetch(catalog["catalog_images"]), **where)
    else:
        latest.take(read_json(run.fetch(catalog["url_mapping"]), "URL mapping"))
    scan = _scanned(run.fetch(manifest["manifest"])) if manifest else None
    if scan is not None and (gone := latest.forget(*scan[:2], catalog_ids, scan[2])):
        log.info("%d products gone from the catalog lost their image (its file was removed)", len(gone))
    if not run.dry_run:
        name = uploaded_images.state_name(where["bucket"])
        uploaded_images.save(run.dir / Path(name).name, latest)
        run.save(run.dir / Path(name).name)
        run.publish_latest(run.dir / Path(name).name, name)
    return latest.days


def _latest_record(run: RunArtifacts, where: dict[str, str]) -> uploaded_images.UploadedImages | None:
    """The latest uploaded images record of `where` (update_catalog's bucket, prefix and url_base), if trusted."""
    return uploaded_images.load(run.fetch_latest(uploaded_images.state_name(where["bucket"])), **where)


def _scanned(manifest_file: Path) -> tuple[list[str], set[str], int] | None:
    """(the run's days that gave images, the products the scan found a file of in them, when the scan began), or
    None when the scan could not read part of the folder (whose files would look removed) or is not timed."""
    header = read_manifest_header(manifest_file)
    unreadable = any(str(s.get("reason", "")).startswith("cannot read") for s in header.get("skipped", []))
    if unreadable or header.get("scan_started_ns") is None:
        return None
    days, products = set(), {product_id_of(Path(s["file_path"]).name) for s in header.get("skipped", [])}
    for image in iter_manifest_images(manifest_file):
        days.add(image.get("image_date"))
        products.add(product_id_of(image["file_name"]))
    return sorted(d for d in days if d), products, header["scan_started_ns"]


def indexer_backlog(topic: str) -> int | None:
    """Messages of the topic the indexer's consumer group has not committed. The publish announces while it is
    above 0, so messages whose announcement was lost (a retry whose first try sent them, an event that found
    the indexer paused) are indexed after a later run. None when the brokers could not say: the publish then
    announces anyway (an indexer run with nothing to do costs little; a missed one leaves the index behind)."""
    from include.catalog_publisher.indexer import unconsumed

    return _indexer_group(topic, unconsumed)


def _indexer_group(topic: str, read):
    """read(consumer, topic) with a consumer of the indexer's group that never subscribes; None (logged) when the
    brokers could not say."""
    from confluent_kafka import KafkaException

    consumer = airflow_clients.kafka_consumer(defaults.DEFAULT_GROUP_ID)
    try:
        return read(consumer, topic)
    except (KafkaException, KeyError) as exc:  # KeyError: the topic is not in the metadata answer
        log.warning("cannot tell the indexer group %s's position on %s (%s)", defaults.DEFAULT_GROUP_ID, topic, exc)
        return None
    finally:
        consumer.close()


def delete_removed_images(
    run: RunArtifacts,
    manifest: dict[str, Any],
    catalog: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Delete the objects of the run's scope that the last run already found unreferenced and still are, and mark
    the newly unreferenced for the next run (removals.py: the scope and the guards); a dry run changes nothing."""
    if not params["delete_removed_images"]:
        raise AirflowSkipException("delete_removed_images is off: objects of removed images are kept")
    bucket, prefix, topic = params["bucket"], params["prefix"] or "", params["topic"]
    target, store = airflow_clients.s3_store(bucket)
    state = latest_published_state(run, topic)
    unreferenced = _unreferenced(run, manifest, catalog, params, store, target, state)
    pending_name = removals.pending_name(bucket)
    pending = removals.load_pending(run.fetch_latest(pending_name), bucket, prefix, topic)
    now, keep = _deletable(unreferenced, pending, topic, state)
    removals.check_removals(now, params["max_deletions"], f"{target.where}/{prefix}")
    if run.dry_run:
        log.info("dry run: %d objects would be deleted, %d left pending", len(now), len(keep))
        return removals.summary(now, list(keep), dry_run=True)
    removals.delete_objects(store, target, now)
    pending_file = run.dir / Path(pending_name).name
    removals.save_pending(pending_file, bucket, prefix, keep, topic)
    run.save(pending_file)
    run.publish_latest(pending_file, pending_name)
    log.info("deleted %d objects of removed images; %d more pending", len(now), len(keep))
    return removals.summary(now, list(keep), dry_run=False)


def removals_left(run: RunArtifacts, manifest: dict[str, Any], catalog: dict[str, Any], params: dict, state) -> bool:
    """Whether delete_removed_images (when on) has an object to delete now or to mark for the next run. `state`:
    latest_published_state."""
    if not params["delete_removed_images"]:
        return False
    bucket, prefix, topic = params["bucket"], params["prefix"] or "", params["topic"]
    if removals.load_pending(run.fetch_latest(removals.pending_name(bucket)), bucket, prefix, topic):
        log.info("deletions are pending from an earlier run: delete_removed_images runs")
        return True
    target, store = airflow_clients.s3_store(bucket)
    unreferenced = _unreferenced(run, manifest, catalog, params, store, target, state)
    if unreferenced:
        log.info("%d objects are no longer referenced: delete_removed_images marks them", len(unreferenced))
    return bool(unreferenced)


def _unreferenced(run: RunArtifacts, manifest: dict, catalog: dict, params: dict, store, target, state) -> list[str]:
    """The objects of the run's scope that nothing references (removals.plan_removals), less those a flat run holds
    at their live version and those the uploaded images record still gives a product."""
    prefix = params["prefix"] or ""
    manifest_file = run.fetch(manifest["manifest"])
    days = removals.scope(manifest_file, prefix)
    live_days = state.days if state is not None else None
    catalog_ids = read_catalog_ids(run.fetch(catalog["catalog_ids"]))
    listed = removals.list_scope(store, target, prefix, days)
    unreferenced = removals.plan_removals(manifest_file, listed, prefix, days, live_days, catalog_ids)
    if days is None:  # a flat run: a product held at its live version (a skipped file) keeps its live object
        held = skipped_products(manifest_file)[0]
        return [key for key in unreferenced if product_id_of(key.rsplit("/", 1)[-1]) not in held]
    if catalog.get("uploaded_images"):  # an image the uploaded images record still gives a product stays
        return _not_recorded(run, catalog, unreferenced)
    return unreferenced


def _not_recorded(run: RunArtifacts, catalog: dict[str, Any], keys: list[str]) -> list[str]:
    """The dated keys that are not the image the latest uploaded images record gives their product (the record
    forgets an image only for a product gone from the catalog: publish_to_kafka)."""
    record = _latest_record(run, catalog["uploaded_images"])
    if record is None:
        return keys
    return [key for key in keys if record.days.get(product_id_of(key.rsplit("/", 1)[-1])) != key.rsplit("/", 2)[-2]]


def _deletable(unreferenced: list[str], pending: dict, topic: str, state) -> tuple[list[str], dict]:
    """(the objects to delete now, the pending ones with the topic's ends when they were marked). An object goes
    once a later run finds it still unreferenced and the indexer's group has committed past the topic's ends of
    the run that marked it (the messages that took its URL out of the index); until then it stays pending."""
    from include.catalog_publisher.indexer import committed_offsets

    ends = dict(state.ends) if state is not None else None  # this run's publish is on the topic up to these
    committed = _indexer_group(topic, committed_offsets) if any(k in pending for k in unreferenced) else None
    now = [key for key in unreferenced if key in pending and removals.indexed(pending[key], committed, ends)]
    waiting = [key for key in unreferenced if key in pending and key not in now]
    if waiting:
        log.info("%d unreferenced objects wait for the indexer to apply the publish that dropped them", len(waiting))
    keep = {key: pending[key] for key in waiting}
    keep.update({key: ends for key in unreferenced if key not in pending})
    return now, keep
