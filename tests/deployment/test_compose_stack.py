"""docker-compose.yaml's Airflow services run together as compose runs them (compose_services.py): airflow-init,
api-server, scheduler, dag-processor, triggerer and two replicas of the worker (`--scale airflow-worker=2`), each
its own process with its own home and host name, on PostgreSQL and Redis from Debian and a fresh embedded
SeaweedFS, Tansu and osmem standing in for the file's s3, kafka and elasticsearch services.

The user's side is the file header's and the README's: .env from .env.example with the generated secrets and a
setting of their own, s3-init, the REST API with the compose login, the DAGs unpaused one after the other. The
publish runs on both workers while the indexer is still paused (its event is dropped), the next publish with
nothing to send announces again because the indexer's group is behind, the indexer run that starts indexes and
verifies the catalog, and a manual indexer run with the form's defaults verifies the latest catalog on object
storage. (Before the file shared one JWT secret, every task failed on the workers with
"Invalid auth token: Signature verification failed": each container wrote its own airflow.cfg with a random one.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from devstack import sample_data, system_services
from devstack.airflow_services import Airflow
from devstack.embedded_stack import EmbeddedStack, free_port
from include.catalog_publisher.defaults import project_root
from tests.compose_file import compose, run_s3_init, s3_init_script
from tests.deployment.compose_services import ComposeHost, Container, copy_project

PRODUCTS = 40
BATCH_SIZE = 4  # about ten mapped upload tasks for the two workers
WORKERS = ("airflow-worker-1", "airflow-worker-2")
SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
# What the user adds to the copied .env.example besides the secrets: manual runs only, and a setting that only
# reaches the containers if the file passes .env through (the topic's partitions, seen on the broker).
USER_SETTINGS = "PUBLISHER_SCHEDULE=none\nPUBLISHER_TOPIC_PARTITIONS=2\n"


def port_of(url: str) -> int:
    return int(re.search(r":(\d+)(?:/|$)", url.removeprefix("http://")).group(1))


def secret_lines(compose_file: Path) -> list[str]:
    """The commands of the file's header that append the user id and the shared secrets to .env."""
    lines = [line[1:].strip() for line in compose_file.read_text().splitlines() if line.startswith("#")]
    found = [line for line in lines if line.startswith("echo ") and line.endswith(">> .env")]
    assert len(found) == 4, found
    return found


def service_logs(root: Path) -> str:
    """The end of every service's log, for a failure message (a CI run keeps no files)."""
    return "\n".join(f"--- {log.stem}\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(root.glob("*.log")))


@pytest.fixture(scope="module")
def deployment():
    root = Path(tempfile.mkdtemp(prefix="catalog-publisher-compose-"))  # outside pytest's 0700 tree: other users
    os.chmod(root, 0o755)
    project = root / "project"
    copy_project(project_root(), project)
    sample_data.generate(project / "data", count=PRODUCTS)
    (project / "logs").mkdir()
    (project / ".env").write_text((project / ".env.example").read_text())
    for line in secret_lines(project / "docker-compose.yaml"):
        done = subprocess.run(["/bin/bash", "-c", line], cwd=project, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    with open(project / ".env", "a") as env_file:
        env_file.write(USER_SETTINGS)
    done = compose("config", "--format", "json", file=project / "docker-compose.yaml")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]

    stack = EmbeddedStack(root / "stack")
    state = stack.start()
    try:
        with system_services.postgres() as database, system_services.redis() as broker:
            api_port = free_port()
            host = ComposeHost(
                root,
                project,
                {
                    ("postgres", 5432): port_of(database.split("@", 1)[1]),
                    ("redis", 6379): port_of(broker),
                    ("airflow-apiserver", 8080): api_port,
                    ("s3", 8333): port_of(state.s3_endpoint),
                    ("kafka", 9092): port_of(state.kafka_bootstrap),
                    ("elasticsearch", 9200): port_of(state.elasticsearch_url),
                },
            )
            init = run_s3_init(s3_init_script(services), state.s3_master)
            assert init.returncode == 0, init.stdout + init.stderr
            done = Container(host, "airflow-init", services["airflow-init"], "airflow-init").run(timeout=600)
            assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

            airflow = Airflow(root, {}, api_port)
            try:
                for name in SERVICES:
                    Container(host, name, services[name], name).start(airflow)
                airflow.wait_for(
                    lambda: airflow.get("/api/v2/monitor/health")["scheduler"]["status"] == "healthy",
                    "the scheduler to be healthy",
                    timeout=240,
                )
                for name in WORKERS:  # after the api-server is healthy, as the file's depends_on says
                    Container(host, "airflow-worker", services["airflow-worker"], name).start(airflow)
                yield {"airflow": airflow, "root": root, "services": services, "state": state, "project": project}
            finally:
                airflow.stop()
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def login(airflow: Airflow, services: dict) -> None:
    """The compose login (airflow-init's admin user) for a bearer token, as docs/deploying.md's curl does."""
    init = services["airflow-init"]["environment"]
    body = {"username": init["_AIRFLOW_WWW_USER_USERNAME"], "password": init["_AIRFLOW_WWW_USER_PASSWORD"]}
    for doc in ("README.md", "docs/deploying.md"):  # the login they give is the one airflow-init creates
        documented = re.search(r"login \*\*(\S+) / (\S+)\*\*", (project_root() / doc).read_text()).groups()
        assert documented == (body["username"], body["password"]), doc
    status, answer = airflow.request("POST", "/auth/token", body)
    assert status == 201, answer
    airflow.headers["Authorization"] = f"Bearer {answer['access_token']}"


def indexer_run_that_verified(airflow: Airflow, root: Path, products: int) -> str:
    """The asset-triggered indexer run that verified the whole catalog (a run that merged publishes, or the first
    of several, may come and go first)."""
    runs = "/api/v2/dags/index_product_catalog/dagRuns?run_type=asset_triggered"
    found: list[str] = []

    def verified() -> bool:
        for run in airflow.get(runs)["dag_runs"]:
            if run["state"] == "failed":
                finished(airflow, root, "index_product_catalog", run["dag_run_id"])  # fails the test, with the logs
            if run["state"] == "success":
                result = airflow.xcom("index_product_catalog", run["dag_run_id"], "verify_index")
                if result["verified"] == products:
                    found.append(run["dag_run_id"])
                    return True
        return False

    airflow.wait_for(verified, "an indexer run that verifies the whole catalog", timeout=240)
    return found[0]


def unpause(airflow: Airflow, dag_id: str) -> None:
    status, body = airflow.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    assert status == 200, body


def finished(airflow: Airflow, root: Path, dag_id: str, run_id: str) -> dict:
    run = airflow.finished(dag_id, run_id)
    if run["state"] != "success":
        states = {t["task_id"]: t["state"] for t in airflow.task_instances(dag_id, run_id)}
        pytest.fail(f"{dag_id} run {run_id} {run['state']}: {states}\n{service_logs(root)}")
    return run


def test_the_compose_services_publish_on_both_workers_and_the_index_holds_the_catalog(deployment):
    airflow, root, services, state = (deployment[k] for k in ("airflow", "root", "services", "state"))
    login(airflow, services)
    airflow.wait_for(lambda: airflow.get("/api/v2/dags/publish_product_images")["dag_id"], "the DAGs to be parsed")

    # The publisher first, the indexer still paused: the publish's event starts no indexer run.
    unpause(airflow, "publish_product_images")
    status, run = airflow.trigger("publish_product_images", {"batch_size": BATCH_SIZE})
    assert status == 200, run
    finished(airflow, root, "publish_product_images", run["dag_run_id"])
    instances = airflow.task_instances("publish_product_images", run["dag_run_id"])
    uploads = [t for t in instances if t["task_id"] == "upload_batch"]
    assert len(uploads) >= 8 and {t["state"] for t in uploads} == {"success"}, uploads
    first = airflow.xcom("publish_product_images", run["dag_run_id"], "publish_to_kafka")
    assert first["published"] > 0 and first["indexer_behind"] > 0

    # Unpaused later, the indexer is brought up to the catalog by the next publish, which has nothing to send: it
    # announces again while the indexer's group is behind (whether Airflow kept the first event for the paused DAG
    # or dropped it, which it did in issue 26's trial: then this announcement is the only one that starts a run).
    unpause(airflow, "index_product_catalog")
    status, again = airflow.trigger("publish_product_images", {"batch_size": BATCH_SIZE})
    assert status == 200, again
    finished(airflow, root, "publish_product_images", again["dag_run_id"])
    nothing = airflow.xcom("publish_product_images", again["dag_run_id"], "publish_to_kafka")
    assert (nothing["published"], nothing["removed"]) == (0, 0)
    catalog = json.loads((deployment["project"] / "data" / "products.json").read_text())
    indexer_run = indexer_run_that_verified(airflow, root, len(catalog))
    instances += airflow.task_instances("index_product_catalog", indexer_run)
    hosts = {t["hostname"] for t in instances if t["state"] == "success"}
    assert hosts == set(WORKERS), f"tasks ran on {hosts}"

    # .env reached the workers: the publish created the topic with the user's partition count.
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": state.kafka_bootstrap}).list_topics(timeout=10).topics
    assert len(topics["products"].partitions) == 2

    verified = airflow.xcom("index_product_catalog", indexer_run, "verify_index")
    assert verified["verified"] == len(catalog) and verified["catalog"].startswith("s3://airflow-artifacts/runs/")
    with urllib.request.urlopen(f"{state.elasticsearch_url}/products/_count") as answer:
        assert json.load(answer)["count"] == len(catalog)

    # A manual indexer run with the form's defaults verifies the latest catalog the publish left on object storage.
    status, manual = airflow.trigger("index_product_catalog", {})
    assert status == 200, manual
    finished(airflow, root, "index_product_catalog", manual["dag_run_id"])
    verified = airflow.xcom("index_product_catalog", manual["dag_run_id"], "verify_index")
    latest = "s3://airflow-artifacts/runs/publish_product_images/latest/products_with_s3_urls.json"
    assert (verified["verified"], verified["catalog"]) == (len(catalog), latest)
