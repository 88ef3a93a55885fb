"""Runs the way users run them, under a real scheduler: api-server, scheduler and dag-processor
(LocalExecutor, on PostgreSQL as production deployments run them), on the embedded stack, driven
through the REST API and the CLI. On SQLite a scheduler with runs in flight can fail on a locked
database (and `backfill create` is refused at once): CI saw both, so these runs test the pipeline on
the database production uses; the README says what SQLite users of the dev UI meet.

The deployment dates its folders in Tokyo (PUBLISHER_TIMEZONE, and [core] default_timezone as the README
says, for the backfill CLI): Tokyo's midnight is 15:00 UTC the day before, so a folder taken by UTC's date
of the interval instead of Tokyo's would be the wrong one, at whatever hour the tests run.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pendulum
import psutil
import pytest

from devstack import system_services
from devstack.airflow_services import RUN_TIMEOUT_S, Airflow, migrate, service_env
from devstack.embedded_stack import free_port
from include.catalog_publisher import env_clients
from include.catalog_publisher.run_artifacts import run_folder
from tests.helpers import (
    fault_proxy,
    indexer_caught_up,
    s3_client,
    write_catalog,
    write_image,
)

# PROD-H has an image on 06-01 and a newer one on 06-03: the backfill below must leave the newer one live.
DAYS = {
    "2025-06-01": ["PROD-D1", "PROD-D2", "PROD-H"],
    "2025-06-02": ["PROD-D3"],
    "2025-06-03": ["PROD-D4", "PROD-D5", "PROD-D6", "PROD-H"],
}
TZ = "Asia/Tokyo"


def recent_days() -> dict[str, list[str]]:
    """Folders around today in TZ: the day before yesterday (the UTC date of yesterday's start), yesterday,
    today, and tomorrow (so there is a "today" folder even if midnight passes before the first run)."""
    today = pendulum.now(TZ).date()
    days = [today.add(days=n).isoformat() for n in (-2, -1, 0, 1)]
    return {day: [f"PROD-R{day.replace('-', '')}-{i}" for i in range(2)] for day in days}


@pytest.fixture(scope="module")
def airflow(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("scheduler")
    home, project = root / "airflow", root / "project"
    home.mkdir()
    write_flat_data(project / "flat")
    days = DAYS | recent_days()
    for day, ids in days.items():  # the default images_dir is date-partitioned
        for i, pid in enumerate(ids):
            write_image(project / "data" / "images" / day / f"{pid}.jpg", seed=i)
    products = [{"product_id": pid, "name": pid} for pid in dict.fromkeys(p for ids in days.values() for p in ids)]
    write_catalog(project / "data" / "products.json", products)
    bucket = f"sched-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)

    # The tasks reach S3 through a proxy whose delay a test can raise: a slow S3, to kill a task mid-batch.
    s3_delay = {"seconds": 0.0}

    def slow_s3(method, path, headers, body):
        time.sleep(s3_delay["seconds"])

    port = free_port()
    with system_services.postgres() as database, fault_proxy(stack.s3_endpoint, slow_s3) as s3_endpoint:
        connection = {**json.loads(stack.env()["AIRFLOW_CONN_AWS_DEFAULT"])}
        connection["extra"] = {**connection["extra"], "endpoint_url": s3_endpoint}
        env = service_env(
            home,
            port,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database,
            CATALOG_PUBLISHER_HOME=str(project),
            PUBLISHER_BUCKET=bucket,
            AIRFLOW_CONN_AWS_DEFAULT=json.dumps(connection),
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",  # task logs as in production: the resume line is checked
            PUBLISHER_TIMEZONE=TZ,
            AIRFLOW__CORE__DEFAULT_TIMEZONE=TZ,  # the backfill CLI reads naive dates in it
        )
        migrate(env)
        server = Airflow(home, env, port)
        server.project, server.bucket, server.s3_delay, server.days = project, bucket, s3_delay, days
        try:
            server.start()
            for dag_id in ("publish_product_images", "index_product_catalog"):
                status, body = server.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                assert status == 200, body
            yield server
        finally:
            server.stop()


def write_flat_data(folder: Path) -> None:
    for i in range(12):
        write_image(folder / "images" / f"PROD-F{i:02d}.jpg", seed=i)
    write_catalog(folder / "products.json", [{"product_id": f"PROD-F{i:02d}", "name": f"Flat {i}"} for i in range(12)])


def run_mapping(airflow: Airflow, run_id: str) -> dict:
    return json.loads(
        (
            airflow.project / "data" / "runs" / run_folder("publish_product_images", run_id) / "s3_url_mapping.json"
        ).read_text()
    )


def test_the_first_scheduled_run_after_deploy_publishes_yesterdays_folder_and_looks_back_not_todays(airflow):
    """The scheduled run of yesterday's Tokyo day, and the two days before it ($PUBLISHER_LOOKBACK_DAYS's default):
    files that landed in an earlier day's folder after its run, here the day before yesterday's that no run took."""
    scheduled = "/api/v2/dags/publish_product_images/dagRuns?run_type=scheduled"
    airflow.wait_for(lambda: airflow.get(scheduled)["total_entries"] >= 1, "the first scheduled run")
    (run,) = airflow.get(scheduled)["dag_runs"]  # catchup=False: one run, not one per day since 2025-01-01
    assert airflow.finished("publish_product_images", run["dag_run_id"])["state"] == "success"

    # Its interval is the whole Tokyo day that ended at the midnight before the run was queued.
    start, end = (pendulum.parse(run[key]).in_timezone(TZ) for key in ("data_interval_start", "data_interval_end"))
    queued = pendulum.parse(run["queued_at"]).in_timezone(TZ)
    assert start.time() == pendulum.time(0) and end == start.add(days=1)
    assert end.date() == queued.date()
    yesterday, today = start.date().isoformat(), end.date().isoformat()
    looked_back = [start.subtract(days=n).date().isoformat() for n in (2, 1)]
    assert pendulum.parse(run["data_interval_start"]).date().isoformat() != yesterday  # UTC's date is not Tokyo's
    assert {looked_back[1], yesterday, today} <= set(airflow.days) and looked_back[0] not in airflow.days

    manifest = airflow.xcom("publish_product_images", run["dag_run_id"], "build_manifest", 0)
    assert manifest["date_folders"] == ",".join([*looked_back, yesterday])
    taken = {day: airflow.days[day] for day in (looked_back[1], yesterday)}  # the folders that exist
    mapping = run_mapping(airflow, run["dag_run_id"])
    assert sorted(mapping["product_to_s3_url"]) == sorted(p for ids in taken.values() for p in ids)
    assert not set(mapping["product_to_s3_url"]) & set(airflow.days[today])
    s3 = s3_client_for(airflow)
    objects = s3.list_objects_v2(Bucket=airflow.bucket, Prefix="products/")["Contents"]
    expected = sorted(f"products/{day}/{pid}.jpg" for day, ids in taken.items() for pid in ids)
    assert sorted(o["Key"] for o in objects) == expected
    for o in objects:
        day, name = o["Key"].split("/")[1:]
        body = s3.get_object(Bucket=airflow.bucket, Key=o["Key"])["Body"].read()
        assert body == (airflow.project / "data" / "images" / day / name).read_bytes()
    catalog_file = airflow.xcom("publish_product_images", run["dag_run_id"], "update_catalog")["catalog"]
    catalog = json.loads(Path(catalog_file).read_text())  # the whole catalog, with the images uploaded so far
    with_image = {p["product_id"]: p["image_date"] for p in catalog if "image_date" in p}
    assert with_image == {pid: day for day, ids in taken.items() for pid in ids}
    assert set(airflow.days[today]) <= {p["product_id"] for p in catalog} - set(with_image)


def indexer_run_that_verified(airflow: Airflow, catalog: str) -> dict:
    """verify_index's result in the asset-triggered indexer run that verified this catalog: the runs of other
    publishes (the scheduled one) come and go too, and merged events index the latest publish's catalog."""
    runs = "/api/v2/dags/index_product_catalog/dagRuns?run_type=asset_triggered"
    found: dict = {}

    def verified() -> bool:
        for run in airflow.get(runs)["dag_runs"]:
            if run["state"] == "success":
                result = airflow.xcom("index_product_catalog", run["dag_run_id"], "verify_index")
                if result["catalog"] == catalog:
                    found.update(result)
                    return True
        return False

    airflow.wait_for(verified, f"an asset-triggered indexer run verifying {catalog}", RUN_TIMEOUT_S)
    return found


def test_triggered_runs_upload_then_skip_unchanged_then_upload_exactly_the_changed(airflow):
    flat = airflow.project / "flat"
    conf = {
        "images_dir": str(flat / "images"),
        "catalog_file": str(flat / "products.json"),
        "prefix": "flat",
        "batch_size": 5,
    }

    status, run = airflow.trigger("publish_product_images", conf)
    assert status == 200, run
    assert airflow.finished("publish_product_images", run["dag_run_id"])["state"] == "success"
    first = run_mapping(airflow, run["dag_run_id"])
    assert (first["uploaded_images"], first["skipped_images"], first["failed_images"]) == (12, 0, 0)
    objects = s3_client_for(airflow).list_objects_v2(Bucket=airflow.bucket, Prefix="flat/")["Contents"]
    assert sorted(o["Key"] for o in objects) == [f"flat/PROD-F{i:02d}.jpg" for i in range(12)]
    tasks = airflow.task_instances("publish_product_images", run["dag_run_id"])
    labels = sorted(t["rendered_map_index"] for t in tasks if t["task_id"] == "upload_batch")
    assert [label.split(":")[0] for label in labels] == ["batch 0", "batch 1", "batch 2"]

    # Data-aware scheduling: the publish emitted the topic asset, so the indexer runs by itself and
    # verifies this run's catalog (its path comes in the asset event) against the index.
    catalog = airflow.xcom("publish_product_images", run["dag_run_id"], "update_catalog")["catalog"]
    verified = indexer_run_that_verified(airflow, catalog)
    assert verified["verified"] == 12 and verified["catalog"].endswith("products_with_s3_urls.json")

    status, run = airflow.trigger("publish_product_images", conf)
    assert airflow.finished("publish_product_images", run["dag_run_id"])["state"] == "success"
    second = run_mapping(airflow, run["dag_run_id"])
    assert (second["uploaded_images"], second["skipped_images"]) == (0, 12)
    assert second["product_to_s3_url"] == first["product_to_s3_url"]

    for i in (2, 7, 11):
        write_image(flat / "images" / f"PROD-F{i:02d}.jpg", seed=50 + i)
    status, run = airflow.trigger("publish_product_images", conf)
    assert airflow.finished("publish_product_images", run["dag_run_id"])["state"] == "success"
    third = run_mapping(airflow, run["dag_run_id"])
    assert (third["uploaded_images"], third["skipped_images"]) == (3, 9)


def s3_client_for(airflow: Airflow):
    import boto3

    return boto3.client("s3", endpoint_url=airflow.env["AWS_ENDPOINT_URL"])


def test_a_backfill_from_a_to_b_publishes_folders_a_to_b_one_run_per_day(airflow, stack):
    """Run backwards, one at a time (the newest day first, the order that would put an old image back live
    if keys were shared): every day its own run and folder, and PROD-H's newer image stays the live one."""
    done = airflow.cli(
        "backfill", "create", "--dag-id", "publish_product_images",
        "--from-date", "2025-06-01", "--to-date", "2025-06-03", "--run-backwards", "--max-active-runs", "1",
        "--dag-run-conf", json.dumps({"prefix": "history", "force_reupload": True}),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    airflow.wait_for(lambda: len(backfill_runs(airflow)) == 3, "three backfill runs")
    by_day = {}
    for run in backfill_runs(airflow):
        assert airflow.finished("publish_product_images", run["dag_run_id"])["state"] == "success"
        folders = airflow.xcom("publish_product_images", run["dag_run_id"], "build_manifest", 0)["date_folders"]
        assert folders == pendulum.parse(run["logical_date"]).in_timezone(TZ).date().isoformat()  # its own day
        by_day[folders] = run_mapping(airflow, run["dag_run_id"])
    assert sorted(by_day) == sorted(DAYS)  # 2025-06-01..03 exactly: none lost to the time zone, none added
    for day, mapping in by_day.items():
        assert sorted(mapping["product_to_s3_url"]) == DAYS[day]
        assert mapping["uploaded_images"] == len(DAYS[day])
    s3 = s3_client_for(airflow)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=airflow.bucket, Prefix="history/")["Contents"])
    assert keys == sorted(f"history/{day}/{pid}.jpg" for day, ids in DAYS.items() for pid in ids)

    # The indexer runs the publishes triggered; once it has committed everything, PROD-H is 06-03's.
    caught_up = "the indexer to index every publish"
    airflow.wait_for(lambda: indexer_caught_up(stack.kafka_bootstrap), caught_up, RUN_TIMEOUT_S)
    live = env_clients.elasticsearch(stack.elasticsearch_url).get(index="products", id="PROD-H")["_source"]
    assert live["image_date"] == "2025-06-03"
    key = live["image_url"].split(f"/{airflow.bucket}/", 1)[1]
    newer = airflow.project / "data" / "images" / "2025-06-03" / "PROD-H.jpg"
    assert s3.get_object(Bucket=airflow.bucket, Key=key)["Body"].read() == newer.read_bytes()


def backfill_runs(airflow: Airflow) -> list[dict]:
    return airflow.get("/api/v2/dags/publish_product_images/dagRuns?run_type=backfill")["dag_runs"]


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"batch_size": -5}, "-5 is less than the minimum of 1"),
        ({"bucket": "Bad_Bucket!"}, "'Bad_Bucket!' does not match"),
        ({"images_layout": "weekly"}, "'weekly' is not one of"),
    ],
    ids=["negative-batch-size", "bad-bucket-name", "unknown-layout"],
)
def test_invalid_conf_is_refused_with_a_clear_message(airflow, conf, message):
    before = len(airflow.get("/api/v2/dags/publish_product_images/dagRuns?run_type=manual")["dag_runs"])
    status, body = airflow.trigger("publish_product_images", conf)
    assert status == 400, body
    assert message in json.dumps(body)
    assert len(airflow.get("/api/v2/dags/publish_product_images/dagRuns?run_type=manual")["dag_runs"]) == before


def test_concurrent_runs_never_share_or_overwrite_artifacts(airflow):
    flat = airflow.project / "flat"
    runs = []
    for prefix in ("concurrent-a", "concurrent-b"):
        conf = {
            "images_dir": str(flat / "images"),
            "catalog_file": str(flat / "products.json"),
            "prefix": prefix,
            "batch_size": 4,
        }
        status, run = airflow.trigger("publish_product_images", conf)
        assert status == 200, run
        runs.append(run["dag_run_id"])
    finished = [airflow.finished("publish_product_images", run_id) for run_id in runs]
    assert [r["state"] for r in finished] == ["success", "success"]
    assert (
        finished[0]["start_date"] < finished[1]["end_date"] and finished[1]["start_date"] < finished[0]["end_date"]
    )  # they overlapped
    for run_id, prefix in zip(runs, ("concurrent-a", "concurrent-b"), strict=True):
        mapping = run_mapping(airflow, run_id)
        assert mapping["prefix"] == prefix and mapping["uploaded_images"] == 12
        assert all(f"/{prefix}/" in url for url in mapping["product_to_s3_url"].values())


@pytest.mark.fault(
    "the upload_batch task's process killed (SIGKILL) mid-batch under the real scheduler",
    "Airflow retries the task; the retry resumes from the journal (its log says how many); "
    "the run succeeds with an exact mapping",
)
def test_an_upload_task_killed_mid_batch_is_retried_and_resumes(airflow):
    flat = airflow.project / "flat"
    conf = {"images_dir": str(flat / "images"), "catalog_file": str(flat / "products.json"), "prefix": "killed"}
    conf |= {"batch_size": 12, "upload_concurrency": 1, "force_reupload": True}
    airflow.s3_delay["seconds"] = 0.4  # 12 images one at a time: about 5 s of uploading
    try:
        status, run = airflow.trigger("publish_product_images", conf)
        assert status == 200, run
        run_id = run["dag_run_id"]
        journal = (
            airflow.project
            / "data"
            / "runs"
            / run_folder("publish_product_images", run_id)
            / "results"
            / "batch-00000.json.journal.jsonl"
        )
        airflow.wait_for(
            lambda: journal.exists() and len(journal.read_text().splitlines()) >= 3,
            "three images uploaded by the first try",
        )
        (upload,) = [
            t for t in airflow.task_instances("publish_product_images", run_id) if t["task_id"] == "upload_batch"
        ]
        assert upload["pid"], upload
        os.kill(upload["pid"], signal.SIGKILL)
        airflow.wait_for(lambda: not psutil.pid_exists(upload["pid"]), "the killed task process to be gone")
        done_before = len(journal.read_text().splitlines())
    finally:
        airflow.s3_delay["seconds"] = 0.0
    assert airflow.finished("publish_product_images", run_id)["state"] == "success"

    (upload,) = [t for t in airflow.task_instances("publish_product_images", run_id) if t["task_id"] == "upload_batch"]
    assert upload["try_number"] == 2 and upload["state"] == "success"
    mapping = run_mapping(airflow, run_id)
    assert (mapping["total_images"], mapping["uploaded_images"], mapping["failed_images"]) == (12, 12, 0)
    objects = s3_client_for(airflow).list_objects_v2(Bucket=airflow.bucket, Prefix="killed/")["Contents"]
    assert sorted(o["Key"] for o in objects) == [f"killed/PROD-F{i:02d}.jpg" for i in range(12)]
    for o in objects:
        body = s3_client_for(airflow).get_object(Bucket=airflow.bucket, Key=o["Key"])["Body"].read()
        assert body == (flat / "images" / o["Key"].split("/")[1]).read_bytes()
    second_try_log = next(
        (airflow.home / "logs").glob(
            f"dag_id=publish_product_images/run_id={run_id}/task_id=upload_batch/map_index=0/attempt=2.log"
        )
    )
    resumed = [line for line in second_try_log.read_text().splitlines() if "resuming:" in line]
    assert resumed and f"resuming: {done_before} of 12 images were uploaded by an earlier attempt" in resumed[0]
