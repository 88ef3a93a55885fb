"""The run report: a "Run report" tab on the run page of publish_product_images and index_product_catalog.

An external view that the UI shows as a tab of every Dag run page, in an iframe of
/catalog-publisher/runs/{DAG_ID}/{RUN_ID}, served by a FastAPI app the api-server mounts at /catalog-publisher
(include.catalog_publisher.run_report_app, which says who may read it). The page is built by
include.catalog_publisher.run_report from the run's XCom and artifacts.

Every Airflow process imports this module, every task process included (Airflow loads the plugins folder for
macros and listeners): it imports nothing but Airflow's plugin class, and the app only when the api-server asks
for it (`fastapi_apps`).
"""

from __future__ import annotations

import logging

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)
URL_PREFIX = "/catalog-publisher"


class RunReportPlugin(AirflowPlugin):
    name = "catalog_publisher_run_report"
    external_views = [
        {
            "name": "Run report",
            "href": URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}",  # same origin: the browser sends the UI's cookie
            "destination": "dag_run",
            "url_route": "run-report",
        }
    ]

    @property
    def fastapi_apps(self) -> list[dict]:
        """Read by the api-server (and `airflow plugins`) only. Without the project on its path the api-server still
        starts, without the report, and says why."""
        try:
            from include.catalog_publisher.run_report_app import app
        except ModuleNotFoundError as exc:
            if exc.name not in ("include", "include.catalog_publisher"):
                raise
            log.error(
                "the run report is off: %s; put the project root on the api-server's PYTHONPATH, as the image and "
                "scripts/dev_airflow.py do",
                exc,
            )
            return []
        return [{"app": app, "url_prefix": URL_PREFIX, "name": "Catalog publisher run report"}]
