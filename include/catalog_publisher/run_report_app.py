"""The run report's web app: what the api-server mounts at /catalog-publisher for plugins/run_report_plugin.py.

Apart from the plugin module because every Airflow process loads the plugins folder, every task process included
(for macros and listeners): this module's imports (FastAPI, the api-server's security) are for the api-server
only, and the plugin imports it when the api-server asks for its apps.

Authentication: a plugin's app is not protected by Airflow on its own. Every route here depends on the caller's
user (the UI's `_token` cookie, sent by the same-origin iframe, or a Bearer token) and on the auth manager allowing
that user to read the Dag's runs and XCom: anonymous requests get 401, others without those permissions 403. No
docs or OpenAPI routes are served.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from include.catalog_publisher import run_report

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
def run_report_page(dag_id: str, run_id: str, session: SessionDep) -> HTMLResponse:
    status, html = run_report.page(session, dag_id, run_id)
    return HTMLResponse(html, status_code=status, headers=HEADERS)
