#!/usr/bin/env python
"""Run an `airflow` command against this project's local Airflow (SQLite in .airflow/, dags/ and plugins/ here).

  python scripts/airflow_local.py standalone                      the UI on http://127.0.0.1:8080
  python scripts/airflow_local.py dags test publish_product_images

Connections come from the environment (AIRFLOW_CONN_*): run it under `scripts/stack.py run --`
to use the embedded stack, as `make airflow-ui` does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

from catalog_publisher import local_airflow  # noqa: E402
from catalog_publisher.settings import project_home  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    local_airflow.configure(project_home() / ".airflow")
    local_airflow.migrate()
    airflow = str(Path(sys.executable).with_name("airflow"))
    os.execv(airflow, [airflow, *sys.argv[1:]])
