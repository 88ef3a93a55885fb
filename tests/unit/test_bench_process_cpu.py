"""The scheduled-runs bench splits the machine's CPU during an upload phase by process (ProcessCpu): real processes
burn CPU here and must be found under the role the report names them by, a window gets its share of each read, and
the report sets the scheduler's processes beside the one-process upload's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from bench import scheduled_runs
from bench.scheduled_runs import ProcessCpu

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\ntime.sleep(60)"
# A service that starts a task process (titled as Airflow titles one) and another process, as an executor does.
SERVICE = f"""
import subprocess, sys, time
subprocess.Popen(["airflow worker -- 0192-task-id", "-c", {BURN.format(seconds=0.6)!r}], executable=sys.executable)
subprocess.Popen([sys.executable, "-c", {BURN.format(seconds=0.4)!r}])
time.sleep(60)
"""


@pytest.fixture
def start():
    """Start Python code as a process in a session of its own; each is killed with all it started at the end."""
    started: list[subprocess.Popen] = []

    def launch(code: str) -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-c", code], start_new_session=True))
        return started[-1]

    yield launch
    for process in started:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _when(done, what: str) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within 30 s"
        time.sleep(0.05)


def test_each_process_is_counted_under_its_role(start):
    """A watched process by its name; what a service starts as a task process or an executor process by its title;
    a process of neither is left out."""
    watched, stranger = start(BURN.format(seconds=0.5)), start(BURN.format(seconds=0.5))
    service = start(SERVICE)
    deployment = SimpleNamespace(airflow=SimpleNamespace(processes=[service], names={service.pid: "scheduler"}))
    with ProcessCpu({watched.pid: "S3 server"}, deployment) as cpu:
        began = time.time()
        _when(lambda: len(psutil.Process(service.pid).children()) == 2, "the service's two processes")
        children = [child.pid for child in psutil.Process(service.pid).children()]
        for pid in [watched.pid, stranger.pid, *children]:
            _when(lambda pid=pid: _cpu_s(pid) >= 0.4, f"process {pid} burning its CPU")
        time.sleep(0.5)  # the burners done: the next reads find them idle
        _when(lambda: sum(_cpu_s(pid) for pid in children) >= 1.0 and _cpu_s(watched.pid) >= 0.5, "all burnt")
        time.sleep(2 * ProcessCpu.EVERY_S)
    used = cpu.between(began - 5, time.time())
    assert used["S3 server"] == pytest.approx(0.5, abs=0.15)
    assert used["task processes"] == pytest.approx(0.6, abs=0.15)
    assert used["executor processes"] == pytest.approx(0.4, abs=0.15)
    assert used["other processes"] >= 0.4  # the stranger: neither watched nor the deployment's


def test_a_window_gets_its_share_of_each_read():
    cpu = ProcessCpu({})
    cpu.samples = [(100.0, {}), (101.0, {"scheduler": 0.4, "S3 server": 1.0}), (102.0, {"scheduler": 0.2})]
    assert cpu.between(100.5, 102.0) == {"scheduler": pytest.approx(0.4), "S3 server": pytest.approx(0.5)}
    assert cpu.between(102.0, 103.0) == {}


def test_the_report_sets_each_deployments_processes_beside_the_one_process_upload():
    def run(upload_s: float, cpu: dict) -> dict:
        return {"upload_s": upload_s, "upload_cpu_s": cpu}

    scheduled = [
        run(16.0, {"S3 server": 17.0, "task processes": 8.5, "scheduler": 3.0}),
        run(18.0, {"S3 server": 19.0, "task processes": 9.5, "scheduler": 3.4}),
    ]
    one = [
        run(14.0, {"S3 server": 17.0, "dag.test process": 10.0}),
        run(15.0, {"S3 server": 18.0, "dag.test process": 10.4}),
    ]
    celery = [run(20.0, {"S3 server": 18.0, "task processes": 9.0, "PostgreSQL": 2.0, "scheduler": 2.0})]
    results = {
        "small": {"images": 10_000, "runs": {"first publish, warm": scheduled, "first publish, one process": one}}
    }
    results["celery"] = {"small": {"runs": {"first publish, warm": celery}}}
    lines = scheduled_runs._upload_cpu(results)
    table = "\n".join(lines)
    assert "| process | LocalExecutor | one process | CeleryExecutor |" in table
    assert "| S3 server | 18.00 | 17.50 | 18.00 |" in table
    assert "| scheduler | 3.20 | 0.00 | 2.00 |" in table
    assert "| dag.test process | 0.00 | 10.20 | 0.00 |" in table
    assert "| PostgreSQL | 0.00 | 0.00 | 2.00 |" in table
    assert "| all | 30.20 | 27.70 | 31.00 |" in table
    assert "| the upload phase (wall seconds) | 17.00 | 14.50 | 20.00 |" in table
    assert lines[-1].endswith("(median): LocalExecutor 11%, CeleryExecutor 13%.")  # 3.2 of 30.2, 2 + 2 of 31
    rows = [line.split(" | ")[0] for line in lines if line.startswith("| ")]
    assert rows.index("| S3 server") < rows.index("| dag.test process") < rows.index("| task processes")
    assert rows.index("| task processes") < rows.index("| scheduler")
    del results["celery"]
    assert "| process | LocalExecutor | one process |" in "\n".join(scheduled_runs._upload_cpu(results))


def test_results_from_before_the_cpu_was_read_render_without_its_table():
    old = {"upload_s": 16.0}
    runs = {"first publish, warm": [old], "first publish, one process": [old]}
    assert scheduled_runs._upload_cpu({"small": {"images": 10_000, "runs": runs}}) == []
