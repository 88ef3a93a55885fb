#!/usr/bin/env python
"""Whole runs as users run them (the headline of make bench): publish_product_images under the project's own
LocalExecutor deployment, each task its own process, against s5cmd and the AWS CLI on the same machine and stack.

    .venv/bin/python bench/scheduled_runs.py [--images 10000] [--large 100000] [--repeats 3]

A fresh embedded stack (.stack/bench-scheduled/) and JPEGs of 25-35 KB (bench/data/). The deployment is
api-server, scheduler and dag-processor with LocalExecutor and the settings `scripts/dev_airflow.py ui` starts
them with (devstack.local_airflow.LAUNCHER_SETTINGS, Airflow's own otherwise), with the publisher and indexer
DAGs; triggered through the REST API, paused (SIGSTOP) between its own runs, each run waited for together with
the indexer runs it starts. A run's time is Airflow's own: the DagRun's start to its end.

At --images:
  first publish, cold    the first run of the fresh deployment: a folder never published, to a fresh prefix and
                         topic with an empty publisher home (nothing known)
  first publish, warm    the same on the running deployment, --repeats times, alternating with `s5cmd cp` of the
                         folder to a fresh prefix, the same with 2,000-image batches (more upload tasks), and the
                         same in one long-lived process (dag.test): the upload phase's yardstick
  no-change              the folder and catalog of the last first publish again, once its indexer run is done,
                         --repeats times, alternating with `aws s3 sync` and `s5cmd sync` of the folder to that
                         prefix (both find nothing to copy)
  changed                one more image rewritten, one more product's price edited and one more product removed
                         each time (1 upload, 2 messages, 1 tombstone), --repeats times
At --large (0: skip): one warm first publish (and one with 2,000-image batches) against one `s5cmd cp`, then the
no-change run against `s5cmd sync`.
With --celery-workers N (0: skip): the runs of both sizes but the changed ones again, on a CeleryExecutor deployment
as docker-compose.yaml runs it (CeleryScheduled), with its own peers' jobs beside them.

Where each task's time goes, from Airflow's task instances and each task's own log (the task runner's groups):
  queue   from the end of the task it waited for (or the run's start) to its being queued: the scheduler
  launch  queued to the first line of its log: the executor taking it, its supervisor and process starting
  parse   the first line to the end of "Pre Execute": the DAG bundle and the DAG file parsed in the task's process
  work    the task's body: its own imports, clients and the step itself
  finish  "Post Execute" to the end Airflow records: the return value pushed, the state reported
And apart, in a fresh interpreter, what the task bodies' imports cost on top of the parsed DAG file.
Writes bench/results/scheduled_runs.md and scheduled_runs.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: data, the stack, the peers' paths, results)
from uploads import DAG_ID, DagTestWorker, Scheduled, ServerCpu, timed_process  # noqa: E402

from devstack import local_airflow, system_services  # noqa: E402

KB = (25, 35)
DAG_IDS = (DAG_ID, "index_product_catalog")
# The deployment a user starts with scripts/dev_airflow.py ui: its settings, and Airflow's own defaults where the
# bench harness (service_env) sets its own.
LAUNCHER_SETTINGS = {
    **local_airflow.LAUNCHER_SETTINGS,
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "5",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # also what the task logs must hold: the task runner's groups
}
AIRFLOW_DEFAULTS = {name: None for name in local_airflow.LAUNCHER_SETTINGS}  # unset: Airflow's own value
PHASES = ("queue", "launch", "parse", "work", "finish")
IDLE_SLEEP = "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"
SERVICES = ("scheduler", "dag-processor", "api-server")  # the deployment's own processes, as Airflow(...) names them
# Settings measured against the deployment's (the scheduler loop, the DAG folder's re-parsing), each on a deployment
# of its own after the main runs.
SETTINGS_VARIANTS = [
    ("Airflow's defaults", AIRFLOW_DEFAULTS),
    (f"the launcher's (scheduler_idle_sleep_time {local_airflow.LAUNCHER_SETTINGS[IDLE_SLEEP]})", {}),
    ("scheduler_idle_sleep_time 0.1", {IDLE_SLEEP: "0.1"}),
    ("the launcher's and min_file_process_interval 300", {"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300"}),
]
RATIOS = [  # (size, our run, the peer, the ratio of times it must stay within; None: reported only)
    ("small", "first publish, cold", "s5cmd cp", 2.5),
    ("small", "first publish, warm", "s5cmd cp", 2.0),
    ("small", "no-change", "aws s3 sync", 2.0),
    ("small", "no-change", "s5cmd sync", None),
    ("large", "first publish, warm", "s5cmd cp", 1.3),
    ("large", "no-change", "s5cmd sync", 1.0),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000, help="the size of the large runs (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-variants", dest="variants", action="store_false", help="skip SETTINGS_VARIANTS")
    parser.add_argument("--celery-workers", type=int, default=2, help="the CeleryExecutor deployment's (0: skip)")
    args = parser.parse_args()
    stack, state, env = bench.fresh_stack("bench-scheduled")
    results: dict = {"machine": f"{os.cpu_count()} cores", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "kb": KB}
    home = ROOT / ".airflow" / "bench-scheduled"
    deployment = Scheduled(home, (user_dags_folder(), DAG_IDS), LAUNCHER_SETTINGS)
    jobs = Jobs(deployment, state, env)
    try:
        results["small"] = jobs.size(args.images, args.repeats, cold=True, changes=True, with_aws=True, batches=2000)
        if args.large:
            results["large"] = jobs.size(
                args.large, args.repeats, cold=False, changes=False, with_aws=False, batches=2000
            )
        results["imports_s"] = task_imports()
        bench.save_results("scheduled_runs", results, render(results))
    finally:
        jobs.close()
        deployment.stop()
    try:  # each part kept as it ends
        if args.variants:
            results["variants"] = compare_settings(home, state, env, args.images, args.large, args.repeats)
            bench.save_results("scheduled_runs", results, render(results))
        if args.celery_workers:
            results["celery"] = under_celery(home, state, env, args)
    finally:
        stack.stop()
    bench.save_results("scheduled_runs", results, render(results))
    return 0


def under_celery(home: Path, state, env: dict, args) -> dict:
    """The runs of both sizes again, on a CeleryExecutor deployment (CeleryScheduled) with the same settings."""
    s3 = boto3.client("s3", endpoint_url=state.s3_endpoint)
    deployment = CeleryScheduled(
        home / "celery",
        (user_dags_folder(), DAG_IDS),
        LAUNCHER_SETTINGS,
        s3,
        state.bucket,
        args.celery_workers,
    )
    try:
        jobs = Jobs(deployment, state, env)
        answer = {"workers": args.celery_workers}
        answer["small"] = jobs.size(args.images, args.repeats, cold=True, changes=False, with_aws=True, batches=2000)
        if args.large:
            answer["large"] = jobs.size(args.large, 1, cold=False, changes=False, with_aws=False, batches=2000)
        return answer
    finally:
        deployment.stop()


def compare_settings(home: Path, state, env: dict, count: int, large: int, repeats: int) -> dict:
    """Each of SETTINGS_VARIANTS on a deployment of its own, all started first and each paused between its runs, so
    their runs alternate: warm first publishes of `count` images and no-change runs, in rounds; then one first
    publish of `large` images each (0: none)."""
    sizes = [count, large] if large else [count]
    images = {n: bench.make_images(bench.DATA / f"images-{KB[0]}-{KB[1]}kb-{n}", n, kb=KB) for n in sizes}
    catalogs = {n: bench.make_catalog(bench.DATA / f"catalog-{n}.json", n) for n in sizes}
    deployments: dict[str, Scheduled] = {}
    answers: dict[str, dict] = {}
    try:
        for number, (name, settings) in enumerate(SETTINGS_VARIANTS):
            folder = home / f"variant-{number}"
            deployments[name] = Scheduled(folder, (user_dags_folder(), DAG_IDS), {**LAUNCHER_SETTINGS, **settings})
            answers[name] = {"settings": settings, "runs": {"first publish, warm": [], "no-change": []}}
        jobs = {name: Jobs(deployment, state, env) for name, deployment in deployments.items()}
        for _ in range(repeats):
            for name in deployments:
                print(f"{count} images, {name}: first publish and no-change", file=sys.stderr)
                runs, first = answers[name]["runs"], jobs[name].first_publish(images[count], catalogs[count], count)
                runs["first publish, warm"].append(first)
                runs["no-change"].append(jobs[name].daily(first.pop("conf"), quiet=True))
        if large:
            for name in deployments:
                print(f"{large} images, {name}: first publish", file=sys.stderr)
                big = jobs[name].first_publish(images[large], catalogs[large], large)
                big.pop("conf")
                answers[name]["runs"]["large first publish"] = [big]
        for name, deployment in deployments.items():
            answers[name]["idle_cpu_s_per_min"] = idle_cpu(deployment)
    finally:
        for deployment in deployments.values():
            deployment.stop()
    return answers


def idle_cpu(deployment: Scheduled, seconds: float = 30) -> dict[str, float]:
    """CPU seconds a minute each service takes with no run to do (its children included), measured over `seconds`."""
    services = {deployment.airflow.names[p.pid]: psutil.Process(p.pid) for p in deployment.airflow.processes}

    def used() -> dict[str, float]:
        tree = {name: [p, *p.children(recursive=True)] for name, p in services.items()}
        return {name: sum(sum(q.cpu_times()[:4]) for q in procs if q.is_running()) for name, procs in tree.items()}

    deployment.resume()
    try:
        before = used()
        time.sleep(seconds)
        after = used()
    finally:
        deployment.pause()
    return {name: (after[name] - before[name]) * 60 / seconds for name in services}


def user_dags_folder() -> Path:
    """The publisher and the indexer it starts (the indexer's group must follow for a quiet day to be quiet)."""
    folder = bench.DATA / "dags-scheduled"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("publish_product_images.py", "index_product_catalog.py"):
        link = folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(ROOT / "dags" / name)
    return folder


class Jobs:
    """The runs and the peers' jobs of one size, on one deployment and stack."""

    def __init__(self, deployment: Scheduled, state, env: dict) -> None:
        self.deployment, self.state, self.s3_env = deployment, state, bench.s3_env(env)
        self.server = ServerCpu(state.pids["seaweedfs"])
        self.worker: DagTestWorker | None = None  # the one-process first publishes' (one_process), once needed

    def size(self, count: int, repeats: int, *, cold: bool, changes: bool, with_aws: bool, batches: int = 0) -> dict:
        """The runs of one size (see the module's doc); `batches`: a batch_size whose first publishes run beside
        the default's; with `changes`, the same first publish in one process (dag.test) too."""
        images = bench.make_images(bench.DATA / f"images-{KB[0]}-{KB[1]}kb-{count}", count, kb=KB)
        catalog = bench.make_catalog(bench.DATA / f"catalog-{count}.json", count)
        runs: dict[str, list[dict]] = {}
        confs: list[dict] = []  # the first publishes' conf, in order

        def record(name: str, job) -> None:
            print(f"{count} images: {name}", file=sys.stderr)
            answer = job()
            confs.extend([answer.pop("conf")] if "conf" in answer else [])
            runs.setdefault(name, []).append(answer)

        if cold:
            record("first publish, cold", lambda: self.first_publish(images, catalog, count))
        in_rounds(self._first_publishes(images, catalog, count, batches, changes), repeats if cold else 1, record)
        conf = confs[-1]
        target = f"s3://{self.state.bucket}/{conf['prefix']}/"
        peers = [("s5cmd sync", lambda: self.s5cmd("sync", f"{images}/", target))]
        if with_aws:
            aws = [str(bench.AWS), "s3", "sync", "--only-show-errors", "--endpoint-url", self.state.s3_endpoint]
            peers.append(("aws s3 sync", lambda: timed_process([*aws, str(images), target], self.s3_env, self.server)))
        in_rounds([("no-change", lambda: self.daily(conf, quiet=True)), *peers], repeats, record)
        for n in range(repeats if changes else 0):
            changed_catalog = change_one_of_each(images, catalog, n)
            record("changed", lambda c=changed_catalog: self.daily({**conf, "catalog_file": str(c)}, quiet=False))
        if changes:  # the folder as it was: the changed images back to their bytes, for the next bench
            restore_images(images, repeats)
        return {"images": count, "runs": runs}

    def _first_publishes(self, images: Path, catalog: Path, count: int, batches: int, one_process: bool) -> list:
        jobs = [("s5cmd cp", lambda: self.s5cmd("cp", "--exclude", ".*", f"{images}/*", self.fresh_prefix()))]
        jobs.append(("first publish, warm", lambda: self.first_publish(images, catalog, count)))
        if batches:  # the same with another batch size
            jobs.append(
                (f"first publish, batch_size {batches}", lambda: self.first_publish(images, catalog, count, batches))
            )
        if one_process:
            jobs.append(("first publish, one process", lambda: self.one_process(images, catalog, count)))
        return jobs

    def one_process(self, images: Path, catalog: Path, count: int) -> dict:
        """The same first publish in one long-lived process (dag.test, every task in it): what the upload phase
        under the scheduler is held against."""
        if self.worker is None:
            self.worker = DagTestWorker(self.deployment.publisher_home.parent / "dag-test")
        name = f"one-{uuid.uuid4().hex[:8]}"
        conf = {"images_dir": str(images), "catalog_file": str(catalog), "bucket": self.state.bucket}
        watched = {self.server.process.pid: "S3 server", self.worker.process.pid: "dag.test process"}
        with ProcessCpu(watched) as cpu:
            answer = self.worker.publish({**conf, "prefix": name, "topic": name}, self.server)
        if answer["uploaded"] != count:
            raise SystemExit(f"a first publish in one process uploaded {answer['uploaded']} images, not {count}")
        answer["upload_cpu_s"] = cpu.between(*answer.pop("spans")["upload_batch"])
        return answer

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def measured_run(self, conf: dict, fresh: bool) -> dict:
        """One run (`fresh`: with an empty publisher home) and the indexer runs it starts: Airflow's run duration,
        what it uploaded and published, the tasks that ran, where their time went."""
        airflow = self.deployment.airflow
        if fresh:
            self.deployment.fresh()
        indexer_runs = f"/api/v2/dags/{DAG_IDS[1]}/dagRuns"
        self.deployment.resume()  # paused between runs: the api-server too
        try:
            before = airflow.get(indexer_runs)["total_entries"]
            watched = {self.server.process.pid: "S3 server"}
            with ProcessCpu(watched, self.deployment) if fresh else contextlib.nullcontext() as cpu:
                run, run_id, server_cpu = self.deployment.run_once(DAG_ID, conf, self.server)
            tasks = airflow.task_instances(DAG_ID, run_id)
            mapping, kafka = (airflow.xcom(DAG_ID, run_id, t) for t in ("merge_url_mapping", "publish_to_kafka"))
            if kafka["published"] or kafka["removed"] or kafka.get("indexer_behind"):  # it announced: the indexer
                # run it starts is created by the scheduler's next loop, maybe after the publish run ended
                started = lambda: airflow.get(indexer_runs)["total_entries"] > before  # noqa: E731
                airflow.wait_for(started, "the indexer run the publish started")
        finally:
            self.deployment.pause()  # once no run is left running: the indexer's too
        # Queued, so a process of its own (a task that skipped itself too); one skipped by another never was.
        ran = [t for t in tasks if t["queued_when"] and t["start_date"] and t["end_date"]]
        answer = {"run_s": bench.span([run]), "server_cpu_s": server_cpu, "uploaded": mapping["uploaded_images"]}
        answer |= {"published": kafka["published"], "removed": kafka["removed"]}
        uploads = [t for t in ran if t["task_id"] == "upload_batch"]
        answer["upload_s"] = bench.span(uploads)
        if cpu is not None:  # a first publish: where the machine's CPU went while it uploaded
            answer["upload_cpu_s"] = cpu.between(*bench.bounds(uploads))
        answer["tasks"] = {t["task_id"]: sum(1 for u in ran if u["task_id"] == t["task_id"]) for t in ran}
        answer["instances"] = {t["id"]: t["task_id"] for t in ran}  # what a task process's title names (TaskPeaks)
        hosts = [t["hostname"] for t in ran if t["task_id"] == "upload_batch"]
        answer["uploads_by_host"] = {host: hosts.count(host) for host in sorted(set(hosts))}
        answer["order"] = {}  # each task's first start, from the run's start
        for t in ran:
            start = _at(t["start_date"]) - _at(run["start_date"])
            answer["order"][t["task_id"]] = min(answer["order"].get(t["task_id"], start), start)
        answer["phases"] = task_phases(airflow.home, run, ran)
        return answer

    def fresh_prefix(self) -> str:
        return f"s3://{self.state.bucket}/s5cmd-{uuid.uuid4().hex[:8]}/"

    def s5cmd(self, *argv: str) -> dict:
        argv = [str(bench.S5CMD), "--endpoint-url", self.state.s3_endpoint, *argv]
        return timed_process(argv, self.s3_env, self.server)

    def first_publish(self, images: Path, catalog: Path, count: int, batch_size: int = 0) -> dict:
        """A folder never published: a fresh prefix and topic, an empty publisher home; the DAG's batch_size unless
        one is given."""
        name = f"sched-{uuid.uuid4().hex[:8]}"
        conf = {"images_dir": str(images), "catalog_file": str(catalog), "bucket": self.state.bucket}
        conf |= {"batch_size": batch_size} if batch_size else {}
        conf |= {"prefix": name, "topic": name}  # created by the publish, as a user's is (compacted)
        answer = self.measured_run(conf, fresh=True)
        if answer["uploaded"] != count:
            raise SystemExit(f"a first publish uploaded {answer['uploaded']} images, not {count}")
        return {**answer, "conf": conf}

    def daily(self, conf: dict, quiet: bool) -> dict:
        """A run on the same folder, prefix and topic; a quiet one must run two tasks and skip the rest."""
        answer = self.measured_run(conf, fresh=False)
        ran = sorted(answer["tasks"])
        if quiet and (answer["uploaded"], ran) != (0, ["build_manifest", "plan_batches"]):  # the rest skipped
            raise SystemExit(f"a no-change run uploaded {answer['uploaded']} and ran {ran}, not two tasks")
        if not quiet and (answer["uploaded"], answer["published"], answer["removed"]) != (1, 2, 1):
            raise SystemExit(f"a changed run did {answer}, not 1 upload, 2 messages, 1 tombstone")
        return answer


class CeleryScheduled(Scheduled):
    """The same deployment under CeleryExecutor, as docker-compose.yaml runs it: PostgreSQL, Redis, `workers` Celery
    workers of Airflow's default concurrency, each with an Airflow and a publisher home of its own, the run artifacts
    in a bucket ($PUBLISHER_ARTIFACTS_URL), the task logs in one folder (the compose file's ./logs), the images in
    the local folder every worker reads (the compose file's ./data)."""

    def __init__(self, home: Path, dags, settings: dict, s3, bucket: str, workers: int = 2):
        self.s3, self.bucket, self.artifacts = s3, bucket, "celery-artifacts"
        self.services = contextlib.ExitStack()
        try:
            database = self.services.enter_context(system_services.postgres())
            broker = self.services.enter_context(system_services.redis())
            celery = {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
                "AIRFLOW__CELERY__BROKER_URL": broker,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database.replace("+psycopg2", ""),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "airflow" / "logs"),
                "PUBLISHER_ARTIFACTS_URL": f"s3://{bucket}/{self.artifacts}",
            }
            super().__init__(home, dags, {**settings, **celery})
            self.worker_homes = [home / f"worker-{n + 1}" for n in range(workers)]
            self.resume()
            for worker in self.worker_homes:
                self._start_worker(worker)
            self.pause()
        except BaseException:
            self.stop()
            raise

    def _start_worker(self, home: Path) -> None:
        shutil.rmtree(home, ignore_errors=True)
        self.airflow.spawn_celery_worker(home)
        log = self.airflow.home / f"{home.name}.log"
        self.airflow.wait_for(lambda: " ready." in log.read_text(errors="replace"), f"Celery {home.name} to be ready")

    def fresh(self) -> None:
        """Nothing known from an earlier run: the workers' homes emptied, the run artifacts deleted."""
        for home in self.worker_homes:
            shutil.rmtree(home / "data", ignore_errors=True)
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.artifacts}/")
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def stop(self) -> None:
        if hasattr(self, "airflow"):
            super().stop()
        self.services.close()


class ProcessCpu(contextlib.AbstractContextManager):
    """Each role's CPU seconds while the block runs, from every process's utime + stime (/proc) read every 0.5 s:
    the processes `watched` names by pid (the S3 server, the dag.test process), the deployment's services by their
    names (SERVICES), what they start as "task processes" (`airflow worker -- <task instance id>`) or "executor
    processes" (the rest: LocalExecutor's workers and each task's supervisor, the Celery workers), "the bench"
    (this process, these reads included), PostgreSQL and Redis (CeleryExecutor's), and "other processes" (the
    broker, the search engine, the machine's own): the roles add up to the whole machine. A process that ends
    between two reads loses what it used since the last one. `between(start, end)`: each role's seconds in a
    window of the block (epoch seconds, each read shared pro rata)."""

    EVERY_S = 0.5
    TICKS = os.sysconf("SC_CLK_TCK")
    TITLES = (("postgres", "PostgreSQL"), ("redis-server", "Redis"))  # a title's start -> its role

    def __init__(self, watched: dict[int, str], deployment: Scheduled | None = None) -> None:
        self.watched = {**watched, os.getpid(): "the bench"}
        self.services = (
            {p.pid: deployment.airflow.names[p.pid] for p in deployment.airflow.processes} if deployment else {}
        )
        self.others: dict[int, str] = {}  # a process outside the deployment: its role, by its title once read
        self.samples: list[tuple[float, dict[str, float]]] = []  # (read at, each role's seconds since the last read)
        self.stop = threading.Event()

    def _read(self) -> dict[int, tuple[int, float]]:
        """Every process's (parent pid, CPU seconds so far)."""
        out = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                    out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / self.TICKS)
        return out

    def _role(self, pid: int, processes: dict[int, tuple[int, float]]) -> str:
        if pid in self.watched:
            return self.watched[pid]
        if pid in self.services:  # a Celery worker is one of the executor's processes
            return self.services[pid] if self.services[pid] in SERVICES else "executor processes"
        parent = processes[pid][0]
        while parent in processes and parent not in self.services:
            parent = processes[parent][0]
        if parent in self.services:  # the deployment's: a task's own process, or what starts one
            title = self._title(pid)
            is_task = title.startswith("airflow worker -- ") and "LocalExecutor" not in title
            return "task processes" if is_task else "executor processes"
        if pid not in self.others:
            title = self._title(pid)
            self.others[pid] = next((role for start, role in self.TITLES if title.startswith(start)), "other processes")
        return self.others[pid]

    @staticmethod
    def _title(pid: int) -> str:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return ""

    def _watch(self) -> None:
        last = self._read()
        self.samples.append((time.time(), {}))
        while not self.stop.wait(self.EVERY_S):
            now, used = self._read(), collections.Counter()
            for pid, (_, seconds) in now.items():
                spent = seconds - last[pid][1] if pid in last else seconds  # a new process: all of it since
                if spent > 0:
                    used[self._role(pid, now)] += spent
            self.others = {pid: role for pid, role in self.others.items() if pid in now}
            self.samples.append((time.time(), dict(used)))
            last = now

    def between(self, start: float, end: float) -> dict[str, float]:
        total: collections.Counter = collections.Counter()
        for (before, _), (at, used) in itertools.pairwise(self.samples):
            share = max(0.0, min(at, end) - max(before, start)) / (at - before)
            for role, seconds in used.items() if share else ():
                total[role] += seconds * share
        return {role: round(seconds, 3) for role, seconds in total.items()}

    def __enter__(self) -> ProcessCpu:
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def in_rounds(jobs: list[tuple[str, Any]], rounds: int, record) -> None:
    """Every job once a round, alternating, the order turned by one each round: none always runs after the same."""
    for round_ in range(rounds):
        for name, job in jobs[round_ % len(jobs) :] + jobs[: round_ % len(jobs)]:
            record(name, job)


def change_one_of_each(images: Path, catalog: Path, n: int) -> Path:
    """Run n's change: one more image rewritten (new bytes, same name), one more product's price edited and one
    more product gone from the catalog, earlier changes kept."""
    products = json.loads(catalog.read_text())
    picture = images / f"PROD-{n:07d}.jpg"
    picture.write_bytes(picture.read_bytes() + f"changed {n} {time.time()}".encode())
    removed = {f"PROD-{len(products) - 1 - i:07d}" for i in range(n + 1)}
    edited = {f"PROD-{len(products) // 2 + i:07d}": 1000 + i for i in range(n + 1)}
    kept = [{**p, "price": edited[p["product_id"]]} if p["product_id"] in edited else p for p in products]
    changed = catalog.with_name(f"{catalog.stem}-changed-{n}.json")
    changed.write_text(json.dumps([p for p in kept if p["product_id"] not in removed]))
    return changed


def restore_images(images: Path, count: int) -> None:
    """Undo change_one_of_each's rewrites (everything after the JPEG's first "changed " trailer) for the next bench."""
    for n in range(count):
        picture = images / f"PROD-{n:07d}.jpg"
        data = picture.read_bytes()
        cut = data.find(b"changed ")
        if cut > 0:
            picture.write_bytes(data[:cut])


# -- where a task's time goes -----------------------------------------------------------------------------


def task_phases(airflow_home: Path, run: dict, tasks: list[dict]) -> dict[str, dict[str, float]]:
    """Per task id, the median instance's seconds in each of PHASES (tasks that ran; skipped ones have no process).

    queue: from the last end of a task instance before this one was queued (the run's start for the first);
    the rest from the task's log: its first line, the end of "Pre Execute", the start of "Post Execute"."""
    ends = sorted(_at(t["end_date"]) for t in tasks if t["end_date"] and t["start_date"])
    started = _at(run["start_date"])
    by_task: dict[str, list[dict[str, float]]] = {}
    for t in tasks:
        queued = _at(t["queued_when"])
        waited_for = max((e for e in ends if e <= queued), default=started)
        marks = _log_marks(airflow_home, run["dag_id"], run["dag_run_id"], t)
        phases = {
            "queue": queued - waited_for,
            "launch": marks["first"] - queued,
            "parse": marks["pre_end"] - marks["first"],
            "work": marks["post"] - marks["pre_end"],
            "finish": _at(t["end_date"]) - marks["post"],
        }
        by_task.setdefault(t["task_id"], []).append(phases)
    return {task: {p: statistics.median(i[p] for i in items) for p in PHASES} for task, items in by_task.items()}


def _log_marks(airflow_home: Path, dag_id: str, run_id: str, ti: dict) -> dict[str, float]:
    folder = airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
    if ti["map_index"] >= 0:
        folder /= f"map_index={ti['map_index']}"
    events = [json.loads(line) for line in (folder / f"attempt={ti['try_number']}.log").read_text().splitlines()]
    stamps = [(_at(e["timestamp"]), e.get("event", "")) for e in events if "timestamp" in e]
    pre_end = next(t for t, event in stamps if event == "::endgroup::")  # the first group is Pre Execute
    post = next(t for t, event in stamps if event == "::group::Post Execute")
    return {"first": stamps[0][0], "pre_end": pre_end, "post": post}


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def task_imports() -> float:
    """Seconds the publisher's task bodies' imports take in a fresh interpreter on top of the parsed DAG file."""
    code = (
        "import time, importlib.util, sys; sys.path.insert(0, {root!r})\n"
        "spec = importlib.util.spec_from_file_location('dag', {dag!r}); dag = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(dag); started = time.perf_counter()\n"
        "import include.catalog_publisher.publisher_tasks, include.catalog_publisher.batching\n"
        "import include.catalog_publisher.indexer, airflow.providers.amazon.aws.hooks.base_aws\n"
        "import airflow.providers.apache.kafka.hooks.produce, confluent_kafka.admin\n"
        "print(time.perf_counter() - started)"
    ).format(root=str(ROOT), dag=str(ROOT / "dags" / "publish_product_images.py"))
    times = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
        if done.returncode:
            raise SystemExit(f"measuring the imports failed: {done.stderr[-2000:]}")
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


# -- the report ------------------------------------------------------------------------------------------


def _median(runs: dict, name: str, key: str) -> float:
    return statistics.median(r[key] for r in runs[name])


def summarize(r: dict) -> list[dict]:
    """The whole-run medians and the ratios the targets are about (RATIOS)."""
    rows = []
    for size, ours, peer, target in RATIOS:
        runs = r.get(size, {}).get("runs", {})
        if ours in runs and peer in runs:
            s, peer_s = _median(runs, ours, "run_s"), _median(runs, peer, "s")
            rows.append({"images": r[size]["images"], "ours": ours, "peer": peer, "s": s, "peer_s": peer_s})
            rows[-1] |= {"ratio": s / peer_s, "target": target}
    return rows


def render(r: dict) -> str:
    small = r["small"]
    lines = [
        f"## Whole runs under the scheduler ({r['started']}, {r['machine']}): `bench/scheduled_runs.py`",
        "",
        f"publish_product_images under LocalExecutor as `scripts/dev_airflow.py ui` runs it (Airflow's own "
        f"settings but scheduler_idle_sleep_time {local_airflow.LAUNCHER_SETTINGS[IDLE_SLEEP]}), each task its own "
        f"process; JPEGs of {r['kb'][0]}-{r['kb'][1]} KB, same SeaweedFS. A run's time is Airflow's (the DagRun's "
        f"start to end); medians of {len(small['runs']['no-change'])} where repeated.",
        "",
        *_ratio_table(r),
        *_upload_phase(r),
        *_batch_sizes(r),
    ]
    if "celery" in r:
        lines += [
            "",
            f"The same runs under CeleryExecutor, as docker-compose.yaml runs it: PostgreSQL, Redis and "
            f"{r['celery']['workers']} Celery workers of Airflow's default concurrency (16) on this one machine, each "
            "with its own home, the run artifacts in a bucket; its own peers' runs beside it:",
            "",
            *_ratio_table(r["celery"]),
            *_batch_sizes(r["celery"]),
            "",
            f"Upload tasks per worker in the first publishes: {_per_worker(r['celery'])}.",
        ]
    else:
        lines += ["", "The CeleryExecutor part was not run this time (`--celery-workers 0`)."]
    lines += _upload_cpu(r)
    lines += _peer_pace(r)
    if "changed" in small["runs"]:
        changed, quiet = _median(small["runs"], "changed", "run_s"), _median(small["runs"], "no-change", "run_s")
        lines += [
            "",
            f"A changed run (1 upload, 2 messages, 1 tombstone) at {small['images']:,} images: "
            f"{changed:.2f}s, {changed - quiet:+.2f}s over the no-change run.",
        ]
    lines += ["", "Where each task's time goes (median seconds of its instances; skipped tasks start no process):", ""]
    for name in ("first publish, warm", "no-change", "changed"):
        if name in small["runs"]:
            lines += phase_table(name, small["runs"][name])
    if "celery" in r:  # the same tasks on the Celery workers: what the artifacts through the bucket cost shows here
        lines += ["The same under CeleryExecutor:", ""]
        for name in ("first publish, warm", "no-change"):
            lines += phase_table(f"{name}, CeleryExecutor", r["celery"]["small"]["runs"][name])
    lines += _variants_table(r.get("variants"))
    lines += [
        f"The task bodies' imports on top of the parsed DAG file (part of `work`), in a fresh interpreter: "
        f"{r['imports_s']:.2f}s.",
        "",
        f"All runs: {json.dumps(_all_runs(r))}",
        *(["", f"All runs under CeleryExecutor: {json.dumps(_all_runs(r['celery']))}"] if "celery" in r else []),
        "",
    ]
    return "\n".join(lines)


def _upload_phase(r: dict) -> list[str]:
    """The upload phase under the scheduler against the same first publish's in one process (its throughput)."""
    runs = r["small"]["runs"]
    if "first publish, one process" not in runs:
        return []
    scheduled, one = (_median(runs, name, "upload_s") for name in ("first publish, warm", "first publish, one process"))
    met = "met" if one / scheduled >= 0.95 else "not met"
    return [
        "",
        f"The upload phase at {r['small']['images']:,} images (the first upload task's start to the last one's end): "
        f"{scheduled:.2f}s under the scheduler, {one:.2f}s in one process (dag.test, in the same rounds), so "
        f"{one / scheduled:.2f}x the one-process throughput (target ≥ 0.95x: {met}).",
    ]


def _upload_cpu(r: dict) -> list[str]:
    """Where the machine's CPU went during the upload phase, by process (ProcessCpu): under the scheduler, in one
    process, under CeleryExecutor. What a deployment spends beside the upload is what its upload phase loses to it
    on a machine the upload fills."""
    kinds = [
        ("LocalExecutor", r["small"]["runs"].get("first publish, warm")),
        ("one process", r["small"]["runs"].get("first publish, one process")),
        ("CeleryExecutor", r.get("celery", {}).get("small", {}).get("runs", {}).get("first publish, warm")),
    ]
    kinds = [(kind, runs) for kind, runs in kinds if runs and all("upload_cpu_s" in run for run in runs)]
    if len(kinds) < 2:
        return []
    roles = list(dict.fromkeys(role for _, runs in kinds for run in runs for role in run["upload_cpu_s"]))
    roles.sort(
        key=lambda role: -max(statistics.median(run["upload_cpu_s"].get(role, 0) for run in runs) for _, runs in kinds)
    )

    def row(label: str, value) -> str:
        cells = [f"{statistics.median(value(run) for run in runs):.2f}" for _, runs in kinds]
        return f"| {label} | {' | '.join(cells)} |"

    lines = [
        "",
        f"The machine's CPU seconds in the upload phase of the warm first publishes at {r['small']['images']:,} "
        "images, by process (every process read every 0.5 s; medians of the same runs as above; 0.00 where a "
        "process does not run):",
        "",
        "| process | " + " | ".join(kind for kind, _ in kinds) + " |",
        "|---" * (len(kinds) + 1) + "|",
        *[row(role, lambda run, role=role: run["upload_cpu_s"].get(role, 0)) for role in roles],
        row("all", lambda run: sum(run["upload_cpu_s"].values())),
        row("the upload phase (wall seconds)", lambda run: run["upload_s"]),
        row("cores busy", lambda run: sum(run["upload_cpu_s"].values()) / run["upload_s"]),
    ]
    shares = [
        f"{kind} {statistics.median(_deployment_share(run['upload_cpu_s']) for run in runs):.0%}"
        for kind, runs in kinds
        if kind != "one process"
    ]
    return [
        *lines,
        "",
        f"The deployment's own processes ({', '.join(SERVICES)}, the executor's, and PostgreSQL and Redis under "
        f"CeleryExecutor) took this share of the CPU the machine spent in the upload phase (median): "
        f"{', '.join(shares)}.",
    ]


def _deployment_share(used: dict[str, float]) -> float:
    """What the Airflow deployment itself (not the task's own process) spent, of all the machine spent."""
    deployment = (*SERVICES, "executor processes", "PostgreSQL", "Redis")
    return sum(used.get(role, 0) for role in deployment) / sum(used.values())


def _peer_pace(r: dict) -> list[str]:
    """How much the same peer job's time moved within this bench (the machine's own pace): a ratio is only as steady
    as its peer, and the large size's rests on one run of each side."""
    parts = [("LocalExecutor", r)] + ([("CeleryExecutor", r["celery"])] if "celery" in r else [])
    lines = []
    for size in ("small", "large"):
        times = [
            (t["s"], where) for where, part in parts for t in part.get(size, {}).get("runs", {}).get("s5cmd cp", [])
        ]
        if len(times) > 1 and max(times)[0] > 1.15 * min(times)[0]:
            (low, low_at), (high, high_at) = min(times), max(times)
            lines.append(
                f"- s5cmd cp of {r[size]['images']:,} images: {low:.2f}s (in the {low_at} rounds) to {high:.2f}s "
                f"(in the {high_at} rounds), {high / low:.2f}x apart."
            )
    if not lines:
        return []
    intro = "The same peer job took different times within this bench (the machine's pace moved; each ratio above "
    intro += "sets a job against its peer of the same rounds, and at the large size against one run of each):"
    return ["", intro, "", *lines]


def _batch_sizes(r: dict) -> list[str]:
    """The first publishes with the default batch_size against those with the smaller one, at each size."""
    lines = []
    for size in ("small", "large"):
        runs = r.get(size, {}).get("runs", {})
        for name in [n for n in runs if n.startswith("first publish, batch_size ")]:
            ours, other = (_median(runs, n, "run_s") for n in ("first publish, warm", name))
            tasks = [
                statistics.median(x["tasks"]["upload_batch"] for x in runs[n]) for n in ("first publish, warm", name)
            ]
            smaller = name.rsplit(" ", 1)[1]
            lines.append(
                f"- {r[size]['images']:,} images, first publish with the default batch_size "
                f"(upload tasks: {tasks[0]:.0f}): {ours:.2f}s; with {smaller} images a batch "
                f"(upload tasks: {tasks[1]:.0f}): {other:.2f}s ({other / ours:.2f}x)."
            )
    return ["", "Batch sizes (same rounds, medians):", "", *lines] if lines else []


def _all_runs(r: dict) -> dict:
    return {size: r[size]["runs"] for size in ("small", "large") if size in r}


def _per_worker(r: dict) -> str:
    """Each worker's upload tasks in each first publish, at each size: both workers must have taken some."""
    publishes = [
        (r[size]["images"], run)
        for size in ("small", "large")
        if size in r
        for name in ("first publish, cold", "first publish, warm")
        for run in r[size]["runs"].get(name, [])
    ]
    return "; ".join(
        f"{n:,} images: " + ", ".join(f"{h} {c}" for h, c in run["uploads_by_host"].items()) for n, run in publishes
    )


def _ratio_table(r: dict) -> list[str]:
    lines = ["| run | images | ours | peer | peer's time | ratio | target | met |", "|---|---|---|---|---|---|---|---|"]
    for row in summarize(r):
        target = row["target"]
        met = "-" if target is None else ("yes" if row["ratio"] <= target else "no")
        lines.append(
            f"| {row['ours']} | {row['images']:,} | {row['s']:.2f}s | {row['peer']} | {row['peer_s']:.2f}s | "
            f"{row['ratio']:.2f}x | {'-' if target is None else f'≤ {target}x'} | {met} |"
        )
    return lines


def _variants_table(variants: dict | None) -> list[str]:
    """The settings compared: whole-run medians and the median scheduler queue of a task, each on its deployment."""
    if not variants:
        return []
    some = next(iter(variants.values()))["runs"]
    count = some["first publish, warm"][0]["uploaded"]
    large = some["large first publish"][0]["uploaded"] if "large first publish" in some else 0
    then = f"; then one first publish of {large:,} images each" if large else ""
    with_cpu = all("upload_cpu_s" in run for v in variants.values() for run in v["runs"]["first publish, warm"])
    cpu_column = "the scheduler's CPU seconds in it | " if with_cpu else ""
    lines = [
        "Airflow settings, each on a deployment of its own after the LocalExecutor runs, all started first and "
        f"their runs alternating ({count:,} images, medians{then}):",
        "",
        "| settings | first publish, warm | its upload phase | "
        f"{cpu_column}no-change | a task's queue (median) | "
        f"{f'first publish of {large:,} (its upload phase) | ' if large else ''}"
        "idle CPU a minute: scheduler, dag-processor, api-server |",
        f"|---|---|---|{'---|' if with_cpu else ''}---|---|{'---|' if large else ''}---|",
    ]
    for name, v in variants.items():
        runs, idle = v["runs"], v["idle_cpu_s_per_min"]
        queues = [p["queue"] for run in runs["no-change"] + runs["first publish, warm"] for p in run["phases"].values()]
        first, quiet = _median(runs, "first publish, warm", "run_s"), _median(runs, "no-change", "run_s")
        upload = _median(runs, "first publish, warm", "upload_s")
        scheduler_cell = ""
        if with_cpu:
            scheduler = statistics.median(
                run["upload_cpu_s"].get("scheduler", 0) for run in runs["first publish, warm"]
            )
            scheduler_cell = f"{scheduler:.2f}s | "
        big = runs.get("large first publish", [])
        big_cell = f"{big[0]['run_s']:.2f}s ({big[0]['upload_s']:.2f}s) | " if big else ""
        idle_cells = ", ".join(f"{idle[service]:.1f}s" for service in SERVICES)
        lines.append(
            f"| {name} | {first:.2f}s | {upload:.2f}s | {scheduler_cell}{quiet:.2f}s | "
            f"{statistics.median(queues):.2f}s | {big_cell}{idle_cells} |"
        )
    return [*lines, ""]


def _tasks(runs: list[dict]) -> set[str]:
    return {task for run in runs for task in run["phases"]}


def phase_table(name: str, runs: list[dict]) -> list[str]:
    """One table of a kind of run: per task, the median over its runs of each phase."""
    first_start = {t: min(run["order"].get(t, float("inf")) for run in runs) for t in _tasks(runs)}
    tasks = sorted(first_start, key=first_start.get)
    lines = [f"**{name}** (whole run {statistics.median(r['run_s'] for r in runs):.2f}s)", ""]
    lines += ["| task | " + " | ".join(PHASES) + " | total |", "|---" * (len(PHASES) + 2) + "|"]
    for task in tasks:
        values = [statistics.median(run["phases"][task][p] for run in runs if task in run["phases"]) for p in PHASES]
        lines.append(f"| {task} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {sum(values):.2f} |")
    return [*lines, ""]


if __name__ == "__main__":
    sys.exit(main())
