"""`make airflow-ui`'s Airflow (scripts/dev_airflow.py ui): every service up, every socket on
loopback, and Ctrl+C (SIGINT to the terminal's process group) or SIGTERM to the script alone (kill, a
supervisor) stops the lot: no Airflow process is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from devstack.embedded_stack import free_port
from include.catalog_publisher.defaults import project_root


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_the_ui_listens_on_loopback_only_and_stops_on_ctrl_c_or_sigterm(tmp_path, stop):
    port = free_port()
    env = {
        **os.environ,
        "CATALOG_PUBLISHER_HOME": str(tmp_path),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    }
    with open(tmp_path / "ui.log", "wb") as log:
        ui = subprocess.Popen(
            [sys.executable, str(project_root() / "scripts" / "dev_airflow.py"), "ui"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert ui.poll() is None and time.monotonic() < deadline, (tmp_path / "ui.log").read_text()[-3000:]
            try:
                status = health(port)
                if all(
                    status[s]["status"] == "healthy"
                    for s in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    break
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(1)
        processes = [psutil.Process(ui.pid), *psutil.Process(ui.pid).children(recursive=True)]
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in processes
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert ("127.0.0.1", port) in listening
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    finally:
        if stop == "ctrl-c":
            os.killpg(ui.pid, signal.SIGINT)  # what Ctrl+C in the terminal sends to the foreground group
        else:
            ui.send_signal(signal.SIGTERM)  # the script alone: it must stop its services itself
        ui.wait(90)
    assert ui.returncode == 0
    gone, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"still running after {stop}: {alive}"
