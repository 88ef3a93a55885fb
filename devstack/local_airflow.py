"""Airflow on this machine for the demo and the tests: SQLite under .airflow/, DAG runs with dag.test().

Development wiring only, like embedded_stack: the pipeline never imports it. `configure` must run
before anything imports airflow, because Airflow reads its home and config once, at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from include.catalog_publisher.defaults import project_root

# What `scripts/dev_airflow.py ui` sets where Airflow's default costs this DAG's runs (each unless the environment
# sets it already): the scheduler's sleep between idle loops is the wait for the next task after each task ends,
# and how often it loops while a long task (an upload) runs, on the cores the task needs.
# docs/deploying.md#airflow-settings-for-these-dags has the measured effect (bench/scheduled_runs.py).
LAUNCHER_SETTINGS = {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25"}


def serving(base_url: str) -> bool:
    """True once the api-server at `base_url` answers, and has answered its execution API (what task processes call)
    once. That API builds its versioned routes on its first request, which takes seconds: made here, at start, the
    deployment's first task does not wait for it (bench/scheduled_runs.py: the cold first publish)."""
    try:
        for path, timeout in (("/api/v2/monitor/health", 2), ("/execution/health", 60)):
            with urllib.request.urlopen(f"{base_url}{path}", timeout=timeout) as answer:
                if answer.status != 200:
                    return False
        return True
    except OSError:
        return False


def airflow_env(airflow_home: str | os.PathLike, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables that point Airflow at `airflow_home` (SQLite there) and this project's dags/ and plugins/."""
    home = Path(airflow_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": str(home),
        # Processes Airflow starts (task runners, Celery workers) import include/ from the project root,
        # as an Astro project or the official image with the project at AIRFLOW_HOME do.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH", "")])),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root() / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API__HOST": os.environ.get("AIRFLOW__API__HOST", "127.0.0.1"),  # the UI listens on loopback only
        **(extra_env or {}),
    }


def configure(airflow_home: str | os.PathLike, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """airflow_env() applied to this process, for an in-process Airflow (dag.test())."""
    env = airflow_env(airflow_home, extra_env)
    os.environ.update(env)
    return env


def migrate() -> None:
    """Create or upgrade the metadata database (idempotent)."""
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


@dataclass
class DagRunResult:
    """What a finished run left behind: its state, each task's state(s) and return values."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, list[str]] = field(default_factory=dict)  # task id -> state of each (mapped) instance
    tries: dict[str, list[int]] = field(default_factory=dict)  # task id -> attempts each instance took
    labels: dict[str, list[str | None]] = field(default_factory=dict)  # mapped task id -> rendered map index labels
    xcoms: dict[str, Any] = field(default_factory=dict)  # task id -> value, or list of values for mapped tasks
    xcom_keys: dict[str, set[str]] = field(default_factory=dict)  # task id -> the keys of every XCom it pushed
    done_for: dict[str, Any] = field(default_factory=dict)  # skipped task id -> its result, worked out by another
    durations: dict[str, float] = field(default_factory=dict)  # task id -> wall seconds from first start to last end
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # task id -> (first start, last end), epoch s
    busy_s: float = 0.0  # the sum of every task instance's own run time
    wall_s: float = 0.0  # dag.test() from call to return
    run_s: float = 0.0  # Airflow's own run duration: the DagRun's start to its end

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    def result(self, task_id: str) -> Any:
        """The task's return value, or the one another task worked out for it when it was skipped (done_for)."""
        return self.xcoms[task_id] if task_id in self.xcoms else self.done_for.get(task_id)


def run_dag(dag_id: str, conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> DagRunResult:
    """Parse dags/, run one DAG run in-process with dag.test() (at logical_date, else now), and collect its outcome."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if dag_id not in bag.dags:
        raise RuntimeError(f"DAG {dag_id} not found; import errors: {bag.import_errors}")
    started = time.monotonic()
    run = bag.dags[dag_id].test(run_conf=conf or {}, **({"logical_date": logical_date} if logical_date else {}))
    result = DagRunResult(dag_id, run.run_id, str(run.state), wall_s=time.monotonic() - started)
    if run.start_date and run.end_date:
        result.run_s = (run.end_date - run.start_date).total_seconds()
    with create_session() as session:
        spans: dict[str, tuple[Any, Any]] = {}
        for ti in sorted(run.get_task_instances(session=session), key=lambda t: (t.task_id, t.map_index)):
            result.task_states.setdefault(ti.task_id, []).append(str(ti.state))
            result.tries.setdefault(ti.task_id, []).append(ti.try_number)
            if ti.map_index >= 0:
                result.labels.setdefault(ti.task_id, []).append(ti.rendered_map_index)
            if ti.start_date and ti.end_date:
                result.busy_s += (ti.end_date - ti.start_date).total_seconds()
                first, last = spans.get(ti.task_id, (ti.start_date, ti.end_date))
                spans[ti.task_id] = (min(first, ti.start_date), max(last, ti.end_date))
        result.durations = {task: (end - start).total_seconds() for task, (start, end) in spans.items()}
        result.spans = {task: (start.timestamp(), end.timestamp()) for task, (start, end) in spans.items()}
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag_id)).all()
        for row in sorted(rows, key=lambda r: (r.task_id, r.map_index)):
            result.xcom_keys.setdefault(row.task_id, set()).add(row.key)
            if row.key == "done_for":  # the results of skipped tasks whose work this one did (plan_batches)
                result.done_for.update(XComModel.deserialize_value(row))
            if row.key != "return_value":
                continue
            value = XComModel.deserialize_value(row)
            if row.map_index >= 0:
                result.xcoms.setdefault(row.task_id, []).append(value)
            else:
                result.xcoms[row.task_id] = value
    return result
