"""Airflow's services as real processes (api-server, scheduler, dag-processor, Celery workers) and a
small REST client for them, shared by the scheduler, browser and CeleryExecutor tests and the benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from devstack import local_airflow

RUN_TIMEOUT_S = 240
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def service_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of every Airflow process of one deployment: its home, API port and a fresh JWT secret."""
    return {
        **os.environ,
        **local_airflow.airflow_env(home),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        **extra,
    }


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


class Airflow:
    """The three Airflow services as real processes, and a small REST client for them."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.base = home, env, f"http://127.0.0.1:{port}"
        self.headers = {"Content-Type": "application/json"}  # plus "Authorization" where the auth manager wants it
        self.processes: list[subprocess.Popen] = []
        self.names: dict[int, str] = {}  # pid -> service name, for a report on a process that exited

    def start(self) -> None:
        self.spawn_services()
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        """Until the services can run a task, waited for as the launcher waits (local_airflow.serving)."""
        self.wait_for(lambda: local_airflow.serving(self.base), "the api-server and its execution API")
        self.wait_for(
            lambda: self.get("/api/v2/monitor/health")["scheduler"]["status"] == "healthy",
            "the scheduler to be healthy",
        )
        self.wait_for(lambda: self.get("/api/v2/dags/publish_product_images")["dag_id"], "the DAGs to be parsed")

    def spawn_services(self) -> None:
        """api-server, scheduler and dag-processor, started (not waited for)."""
        for name, args in (
            ("api-server", ["api-server"]),
            ("scheduler", ["scheduler", "--skip-serve-logs"]),
            ("dag-processor", ["dag-processor"]),
        ):
            self.spawn(name, args, self.env)

    def spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
        """One more Airflow process of this deployment (a Celery worker, say), logging to <home>/<name>.log."""
        return self.spawn_command(name, [AIRFLOW, *args], env, cwd)

    def spawn_celery_worker(self, home: Path, *args: str) -> subprocess.Popen:
        """A Celery worker of this deployment named after `home` (created), with its own Airflow and publisher home
        there. Workers of one deployment may share a host: each reports its own name as its task instances'
        hostname, so a test or the bench can tell which ran where. `args`: more `celery worker` options."""
        (home / "airflow").mkdir(parents=True)
        (home / "worker_identity.py").write_text(f"def hostname():\n    return {home.name!r}\n")
        env = {
            **self.env,
            "AIRFLOW_HOME": str(home / "airflow"),
            "CATALOG_PUBLISHER_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(home), self.env.get("PYTHONPATH", "")]),  # its identity first
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.hostname",
        }
        argv = ["celery", "worker", *args, "--celery-hostname", f"{home.name}@%h", "--skip-serve-logs"]
        return self.spawn(home.name, argv, env, home)

    def spawn_command(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None, **popen):
        """Any command line as one process of this deployment (`popen`: Popen's user, group, ...)."""
        with open(self.home / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen
            )
        self.processes.append(process)
        self.names[process.pid] = name
        return process

    def exited(self) -> str | None:
        """Which service has exited, with the end of its log (a CI run keeps no files), or None."""
        for process in self.processes:
            if process.poll() is not None:
                name = self.names[process.pid]
                tail = (self.home / f"{name}.log").read_text(errors="replace")[-4000:]
                return f"Airflow's {name} exited ({process.returncode}); the end of its log:\n{tail}"
        return None

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One REST call. SQLite lets one writer in at a time: while the scheduler writes, the
        api-server may answer 500 "Database error" (a locked database); such answers are retried."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(5):
            request = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as error:
                status, answer = error.code, json.loads(error.read() or b"{}")
            locked = (
                status == 500
                and isinstance(answer.get("detail"), dict)
                and answer["detail"].get("reason") == "Database error"
            )
            if not locked or attempt == 4:
                return status, answer
            time.sleep(1 + attempt)
        raise AssertionError("unreachable")

    def get(self, path: str) -> dict:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def wait_for_no_run(self, timeout: float = 120) -> None:
        """Wait until no DAG run of the deployment is running or queued (the runs a finished one started too)."""
        runs = "/api/v2/dags/~/dagRuns?state=running&state=queued"
        self.wait_for(lambda: self.get(runs)["total_entries"] == 0, "no run left running", timeout)

    def wait_for(self, condition, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.exited()
            assert exited is None, exited
            try:
                if condition():
                    return
            except (AssertionError, KeyError, OSError):
                pass
            time.sleep(1)
        raise TimeoutError(f"timed out waiting for {what}; logs in {self.home}")

    def trigger(self, dag_id: str, conf: dict) -> tuple[int, dict]:
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})

    def finished(self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}"
        self.wait_for(lambda: self.get(path)["state"] in ("success", "failed"), f"run {run_id}", timeout)
        return self.get(path)

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        """A task's return value (or XCom `key`). A task skipped because another did its work has none: then the
        result that one pushed for it under `done_for` (publish_product_images' plan_batches on a quiet day)."""
        quoted = urllib.request.quote(run_id, safe="")
        entry = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}"
        status, body = self.request("GET", f"{entry}?map_index={map_index}")
        if status == 404 and key == "return_value" and map_index == -1:
            done = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/plan_batches/xcomEntries/done_for"
            status, found = self.request("GET", done)
            if status == 200 and task_id in found["value"]:
                return found["value"][task_id]
        assert status == 200, (entry, status, body)
        return body["value"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        quoted = urllib.request.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=1000")["task_instances"]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """One Airflow CLI command against this deployment."""
        return subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=120)
