"""The run report: a "Run report" tab on the run page of publish_product_images and index_product_catalog.

A FastAPI app mounted in the api-server at /catalog-publisher, and an external view that the UI shows
as a tab of every Dag run page, in an iframe of /catalog-publisher/runs/{DAG_ID}/{RUN_ID}. The page
is built by include.catalog_publisher.run_report from the run's XCom and artifacts.

Authentication: a plugin's app is not protected by Airflow on its own. Every route here depends
on the caller's user (the UI's `_token` cookie, sent by the same-origin iframe, or a Bearer token)
and on the auth manager allowing that user to read the Dag's runs and XCom: anonymous requests get
401, others without those permissions 403. No docs or OpenAPI routes are served.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

URL_PREFIX = "/catalog-publisher"
# The page embeds nothing from elsewhere and runs no script; only the Airflow UI may frame it.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

app = FastAPI(title="Catalog publisher run report", docs_url=None, redoc_url=None, openapi_url=None)


@app.get(
    "/runs/{dag_id}/{run_id:path}",
    response_class=HTMLResponse,
    dependencies=[
        Depends(requires_access_dag("GET", DagAccessEntity.RUN)),
        Depends(requires_access_dag("GET", DagAccessEntity.XCOM)),
    ],
)
def run_report(dag_id: str, run_id: str, session: SessionDep) -> HTMLResponse:
    from include.catalog_publisher import run_report

    status, html = run_report.page(session, dag_id, run_id)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


class RunReportPlugin(AirflowPlugin):
    name = "catalog_publisher_run_report"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Catalog publisher run report"}]
    external_views = [
        {
            "name": "Run report",
            "href": URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}",  # same origin: the browser sends the UI's cookie
            "destination": "dag_run",
            "url_route": "run-report",
        }
    ]
