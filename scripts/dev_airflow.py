#!/usr/bin/env python
"""Run Airflow against this project's local setup (SQLite in .airflow/, dags/ and plugins/ here).

  python scripts/dev_airflow.py ui                              the UI on http://127.0.0.1:8080 (prints how to sign in)
  python scripts/dev_airflow.py dags test publish_product_images   any other `airflow` command

`ui` runs api-server, scheduler, dag-processor and triggerer (LocalExecutor) listening on loopback
only: unlike `airflow standalone`, no log server is started (it would listen on every interface;
on one host the UI reads task logs from .airflow/logs directly). Ctrl+C, or SIGTERM (kill, a
supervisor, `make` stopped), stops them all.
Connections come from the environment (AIRFLOW_CONN_*): run it under `scripts/stack.py run --`
to use the embedded stack, as `make airflow-ui` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: include/ and devstack/ import from it

from devstack import local_airflow  # noqa: E402
from include.catalog_publisher.defaults import project_home  # noqa: E402

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
UI_SERVICES = (
    ["api-server"],
    ["scheduler", "--skip-serve-logs"],
    ["dag-processor"],
    ["triggerer", "--skip-serve-logs"],
)


class _Terminated(Exception):
    """SIGTERM reached this process (and only it): stop the services as Ctrl+C would."""


def _terminated(signum, frame) -> None:
    raise _Terminated


def run_ui(home: Path) -> int:
    """The four services until one exits, Ctrl+C or SIGTERM; then all of them stop."""
    signal.signal(signal.SIGTERM, _terminated)
    port = _set_defaults()
    processes = [subprocess.Popen([AIRFLOW, *args]) for args in UI_SERVICES]
    url = f"http://{os.environ.get('AIRFLOW__API__HOST', '127.0.0.1')}:{port}"
    passwords_file = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    passwords = Path(passwords_file) if passwords_file else home / "simple_auth_manager_passwords.json.generated"
    print(f"Starting Airflow on {url} (api-server, scheduler, dag-processor, triggerer); Ctrl+C stops it.", flush=True)
    interrupted = announced = False
    try:
        while all(p.poll() is None for p in processes):
            if not announced and local_airflow.serving(url) and passwords.is_file():
                print(_signpost(url, passwords), flush=True)
                announced = True
            time.sleep(1)
        return next(p.returncode for p in processes if p.poll() is not None) or 1
    except KeyboardInterrupt:
        interrupted = True
        return 0
    except _Terminated:  # the services got no signal: the SIGTERM below is their first
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stopping short
        # After Ctrl+C each service has had SIGINT from the terminal already: give them time, as a
        # second signal makes Airflow force its exit and leave the executor's worker processes behind.
        if interrupted:
            _wait_all(processes, 30)
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        _wait_all(processes, 30)
        for p in processes:
            if p.poll() is None:
                p.kill()


def _set_defaults() -> str:
    """The deployment's settings, each unless the environment has it: LocalExecutor, local_airflow.LAUNCHER_SETTINGS,
    a user admin, the API's port (returned)."""
    os.environ.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    for name, value in local_airflow.LAUNCHER_SETTINGS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    port = os.environ.setdefault("AIRFLOW__API__PORT", "8080")
    os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://127.0.0.1:{port}/execution/")
    return port


def _signpost(url: str, passwords: Path) -> str:
    """Where the UI is and how to sign in, once it answers."""
    configured = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    users = [user.split(":")[0] for user in configured.split(",") if user.strip()]
    return "\n".join(
        [
            "",
            f"  Airflow UI    {url}",
            f"  user          {', '.join(users)}",
            f"  password      in {passwords}",
            "  run reports   the 'Run report' tab of each run of publish_product_images and index_product_catalog",
            "  Ctrl+C stops Airflow (and, under `make airflow-ui`, then the embedded stack).",
            "",
        ]
    )


def _wait_all(processes: list[subprocess.Popen], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for p in processes:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1:] in (["ui", "-h"], ["ui", "--help"]):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    home = project_home() / ".airflow"
    local_airflow.configure(home)
    if not {"-h", "--help"} & set(sys.argv[1:]):  # an `airflow ... --help` answers without a database
        local_airflow.migrate()
    if sys.argv[1:] == ["ui"]:
        sys.exit(run_ui(home))
    os.execv(AIRFLOW, [AIRFLOW, *sys.argv[1:]])
