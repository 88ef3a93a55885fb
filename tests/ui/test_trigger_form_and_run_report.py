"""The Airflow UI as a person uses it, in a real browser (headless Chromium from Debian, via Playwright).

Airflow's api-server, scheduler and dag-processor run on the embedded stack with the login on. The
browser signs in and opens the publisher's trigger form: untouched, it can be sent (no required
field left empty). It fills in the images folder, the batch size and the failure threshold and
triggers; one image changes after the manifest is built, so the upload fails it for real. The run
report, opened from the run page's "Run report" tab, must show what happened: the counts, the
failed image and its reason, the chart of the batches, the catalog mismatches, what Kafka
confirmed and where the artifacts are. Then the indexer's form is sent untouched (its defaults
index the topic and verify the catalog the publisher just wrote), and its run report is read.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from devstack import system_services
from devstack.airflow_services import migrate, service_env
from devstack.embedded_stack import free_port
from include.catalog_publisher.defaults import project_root
from tests.helpers import s3_client, write_catalog, write_image
from tests.ui.support import USER, ImageChangedAfterManifest, SignedInAirflow

PUBLISHER, INDEXER, REBUILD = "publish_product_images", "index_product_catalog", "rebuild_product_index"
BATCH_SIZE = 4
UNCHANGED = 3  # PROD-001..003 are in the bucket already
FAILING = "PROD-007"  # rewritten after the manifest: the upload fails it
ORPHAN = "PROD-012"  # an image without product
NOT_PICTURED = ["PROD-050", "PROD-051"]  # products without image
REPORT_PATH = "/catalog-publisher/runs"
DOCS_IMAGES = {"02-publisher-form-filled.png": "trigger-form.png", "03-run-report-tab.png": "run-report.png"}


def pid(n: int) -> str:
    return f"PROD-{n:03d}"


@pytest.fixture(scope="module")
def ui(stack, tmp_path_factory):
    """Airflow (LocalExecutor, PostgreSQL) with its login on, over a project of its own: 12 images and a file
    that is not one in incoming/, the catalog in data/products.json, and a bucket that already holds 3 of the
    images (as after an earlier publish).

    PostgreSQL, as in production, not SQLite: the form of a paused Dag sends the unpause and the trigger at
    once, and on SQLite the api-server can stall both for SQLite's busy timeout (Airflow's audit-log write
    blocks the event loop while it waits for the lock, which the other request needs the loop to commit).
    Seen in CI with a 60 s busy timeout then set: the run was made, the unpause failed 60 s later.
    docs/operations.md tells SQLite users to unpause first."""
    root = tmp_path_factory.mktemp("ui")
    home, project = root / "airflow", root / "project"
    home.mkdir()
    s3 = s3_client(stack)
    bucket = f"ui-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    for n in range(1, 13):
        image = write_image(project / "incoming" / f"{pid(n)}.jpg", seed=n, side=160 + 40 * n)
        if n <= UNCHANGED:
            s3.put_object(Bucket=bucket, Key=f"products/{image.name}", Body=image.read_bytes())
    (project / "incoming" / "notes.jpg").write_text("a text file with an image's name")  # the scan skips it
    products = [{"product_id": pid(n), "name": f"Product {n}"} for n in range(1, 12)]
    (project / "data").mkdir()
    write_catalog(project / "data" / "products.json", products + [{"product_id": p, "name": p} for p in NOT_PICTURED])
    with system_services.postgres() as database:
        port = free_port()
        env = service_env(
            home,
            port,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
            CATALOG_PUBLISHER_HOME=str(project),
            PUBLISHER_BUCKET=bucket,
            PUBLISHER_SCHEDULE="none",
        )
        migrate(env)
        server = SignedInAirflow(home, env, port)
        server.project = project
        try:
            server.start()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def page(ui, chromium):
    """A browser tab signed in through Airflow's login page."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, base_url=ui.base)
    tab = context.new_page()
    tab.goto("/")
    tab.wait_for_url("**/auth/login**")  # the UI sends a visitor without a session to its login page
    tab.get_by_label("Username").fill(USER)
    tab.get_by_label("Password").fill(ui.password())
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(re.compile(r"^[^?]*/$"))
    yield tab
    context.close()


# ---------------------------------------------------------------------------------------------------


def test_the_report_is_refused_without_signing_in(ui):
    """No anonymous route to catalog data: without a valid token the report's URL answers 401 or 403, and
    its app serves no docs."""
    url = f"{ui.base}{REPORT_PATH}/{PUBLISHER}/{urllib.parse.quote('manual__2025-06-01T00:00:00+00:00', safe='')}"
    assert http_status(url) == 401
    assert http_status(url, cookie="_token=not-a-token") in (401, 403)
    assert http_status(url, headers={"Authorization": "Bearer not-a-token"}) in (401, 403)
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert http_status(f"{ui.base}/catalog-publisher{path}") == 404, path
    # Signed in, the same URL reaches the report, which knows no such run.
    assert http_status(url, headers={"Authorization": f"Bearer {ui.token}"}) == 404


def test_trigger_forms_and_run_reports_in_the_browser(ui, page, screenshots):
    # 1. The publisher's form: sendable untouched, then filled in; one image changes under the run.
    incoming = ui.project / "incoming"
    change = ImageChangedAfterManifest(ui.project / "data" / "runs" / PUBLISHER, incoming / f"{FAILING}.jpg")
    change.start()
    # The last field filled leaves its section open for the screenshot: the images folder.
    values = {"max_failed_percent": "10", "batch_size": str(BATCH_SIZE), "images_dir": str(incoming)}
    publish = trigger_from_form(
        page,
        PUBLISHER,
        values,
        screenshots / "01-publisher-form-untouched.png",
        screenshots / "02-publisher-form-filled.png",
    )

    # The UI goes to the new run's page; its report is one click away, and follows the run until it ends.
    report = open_report(page, PUBLISHER, publish)
    run = ui.finished(PUBLISHER, publish)
    assert change.wait(), "the image was not changed after the manifest"
    assert run["state"] == "success", task_states(ui, PUBLISHER, publish)
    expect(report.locator("header .state")).to_have_text("success", timeout=30_000)
    expect_card(report, "Images found", "12")
    expect_card(report, "Uploaded", "8")
    expect_card(report, "Skipped as unchanged", str(UNCHANGED))
    expect_card(report, "Failed", "1")
    expect_card(report, "Files skipped by the scan", "1")
    skipped = report.get_by_role("table", name="Files skipped by the scan").locator("tr", has_text="notes.jpg")
    expect(skipped).to_contain_text("not an image")
    failed = report.get_by_role("table", name="Failed images").locator("tr", has_text=FAILING)
    expect(failed).to_contain_text("file changed since the manifest was built")
    chart = report.get_by_role("img", name="Bytes and throughput per upload batch")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar")).to_have_count(3)  # 9 new images in batches of 4
    expect(chart.locator("rect.bar.failed")).to_have_count(1)
    expect(chart.locator("circle.dot")).to_have_count(3)
    expect(report.get_by_role("table", name="Upload batches").locator("tr")).to_have_count(4)
    expect_card(report, "Products", "13")
    expect_card(report, "With S3 image URL", "10")
    expect_card(report, "Products without image", "2")
    expect_card(report, "Held at their live version", "1")  # the failed upload's product: not published without it
    expect_card(report, "Images without product", "1")
    expect(report.locator("#without-image")).to_contain_text(", ".join(sorted(NOT_PICTURED)))
    expect(report.locator("#held")).to_contain_text(FAILING)
    expect(report.locator("#without-product")).to_contain_text(ORPHAN)
    expect_card(report, "Changed products published", "12")
    # Products other tests left on the shared default topic are not in this catalog: they go, and the card says so.
    removed = ui.xcom(PUBLISHER, publish, "publish_to_kafka")["removed"]
    expect_card(report, "Removed products (tombstones)", str(removed))
    mapping = report.get_by_role("table", name="Artifacts").locator("tr", has_text="URL mapping").locator("code")
    assert Path(mapping.inner_text()).is_file()
    tall_screenshot(page, screenshots / "03-run-report-tab.png")

    # What the tab's frame loaded is refused without the browser's sign-in cookie.
    frame_url = page.locator(f"iframe[src*='{REPORT_PATH}/']").get_attribute("src")
    assert http_status(urllib.parse.urljoin(ui.base, frame_url)) == 401
    full = page.context.new_page()
    full.goto(frame_url)
    full.screenshot(path=screenshots / "04-run-report-full-page.png", full_page=True)
    full.close()

    # 2. The indexer's form, sent untouched: it indexes the topic and verifies the latest catalog.
    index_run = trigger_from_form(page, INDEXER, {}, screenshots / "05-indexer-form-untouched.png")
    report = open_report(page, INDEXER, index_run)
    assert ui.finished(INDEXER, index_run)["state"] == "success", task_states(ui, INDEXER, index_run)
    expect(report.locator("header .state")).to_have_text("success", timeout=30_000)
    indexed = ui.xcom(INDEXER, index_run, "indexing_totals")
    # The 12 products published (the 13th held) and what other tests of the session left on the topic.
    assert indexed["indexed"] >= 12
    expect_card(report, "Messages consumed", f"{indexed['consumed']:,}")
    expect_card(report, "Documents indexed", f"{indexed['indexed']:,}")
    expect_card(report, "Dead-lettered", f"{indexed['dead_lettered']:,}")
    verification = report.get_by_role("region", name="Verification")
    expect(verification).to_contain_text("12 products of the catalog are searchable")
    page.screenshot(path=screenshots / "06-index-run-report.png")

    # 3. The rebuild's form, sent untouched: a new version of `products` from the topic, swapped in.
    rebuild_run = trigger_from_form(page, REBUILD, {}, screenshots / "07-rebuild-form-untouched.png")
    report = open_report(page, REBUILD, rebuild_run)
    assert ui.finished(REBUILD, rebuild_run)["state"] == "success", task_states(ui, REBUILD, rebuild_run)
    expect(report.locator("header .state")).to_have_text("success", timeout=30_000)
    swapped = ui.xcom(REBUILD, rebuild_run, "swap_alias")
    expect(report.get_by_role("region", name="Swap")).to_contain_text(f"to {swapped['index']}")
    expect(report.get_by_role("region", name="Verification")).to_contain_text("Passed: 12 products")
    page.screenshot(path=screenshots / "08-rebuild-run-report.png")

    if os.environ.get("UPDATE_DOCS_IMAGES"):  # docs/operations.md's pictures: UPDATE_DOCS_IMAGES=1 pytest tests/ui
        docs = project_root() / "docs" / "img"
        docs.mkdir(exist_ok=True)
        for name, target in DOCS_IMAGES.items():
            shutil.copyfile(screenshots / name, docs / target)


# ---------------------------------------------------------------------------------------------------


def http_status(url: str, cookie: str | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers={**(headers or {}), **({"Cookie": cookie} if cookie else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def task_states(ui: SignedInAirflow, dag_id: str, run_id: str) -> dict[str, str]:
    return {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in ui.task_instances(dag_id, run_id)}


def trigger_from_form(page, dag_id: str, values: dict[str, str], *screenshots: Path) -> str:
    """Open the Dag's trigger form, check it can be sent untouched, fill in `values` (param -> text)
    and send it; the new run's id. Screenshots: the untouched form, then (if any values) the filled one."""
    page.goto(f"/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    form = page.get_by_role("dialog")
    send = form.get_by_role("button", name="Trigger", exact=True)
    expect(send).to_be_visible()
    tall_screenshot(page, screenshots[0])
    assert send.is_enabled(), f"the trigger form of {dag_id} cannot be sent with its defaults; see {screenshots[0]}"
    for name, value in values.items():
        field = form.locator(f"[name=element_{name}]")
        if not field.is_visible():  # in a section that is closed: open it
            field.locator("xpath=ancestor::*[@data-part='item'][1]").locator("[data-part='item-trigger']").first.click()
        field.fill(value)
        field.blur()
    if values:
        tall_screenshot(page, screenshots[1])
        assert send.is_enabled(), f"the form of {dag_id} cannot be sent as filled in ({values}); see {screenshots[1]}"
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/{dag_id}/dagRuns")) as answer:
        send.click()
    assert answer.value.status == 200, answer.value.text()
    return answer.value.json()["dag_run_id"]


def tall_screenshot(page, path: Path, height: int = 1500) -> None:
    """The whole form or report in one picture: a taller window for the shot."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    page.screenshot(path=path)
    page.set_viewport_size(size)


def open_report(page, dag_id: str, run_id: str):
    """On the run's page (where the UI goes after a trigger), its "Run report" tab: the report's frame."""
    page.wait_for_url(lambda url: urllib.parse.unquote(url).endswith(f"/dags/{dag_id}/runs/{run_id}"))
    expect(page.get_by_role("heading", name=run_id, exact=True)).to_be_visible()  # the new page, not the last one
    page.get_by_role("link", name="Run report").click()
    report = page.frame_locator(f"iframe[src$='{REPORT_PATH}/{dag_id}/{urllib.parse.quote(run_id, safe='')}']")
    expect(report.get_by_role("heading", level=1)).to_contain_text("run report")
    return report


def expect_card(report, label: str, value: str) -> None:
    """The big number under `label` on the report reads `value`."""
    card = report.locator(".card", has=report.locator("dt", has_text=re.compile(f"^{re.escape(label)}$")))
    expect(card.locator(".value")).to_have_text(value)
