#!/usr/bin/env python
"""Uploads, like with like (part of make bench): the same files on disk to the same bucket, whole job against
whole job, ours against `s5cmd cp`, for small (~30 KB) and larger (~120 KB) JPEGs.

    .venv/bin/python bench/uploads.py [--images 10000] [--script-images 3000,10000] [--repeats 3]
                                      [--profiles 25-35,100-140] [--no-scheduler]

For each profile, on an embedded stack of its own (.stack/bench-uploads/, emptied first, so both profiles
start from an empty server), `--repeats` rounds; in each round, every job below once, each to a fresh prefix:
  s5cmd cp           the folder of --images images (the whole process)
  upload_to_s3.py    the runbook's upload step (the whole process) at each --script-images size, beside
                     `s5cmd cp` of the same folder; its manifest is built before, untimed (the runbook's step 1)
  dag.test           a first publish of the folder (nothing known: a fresh publisher home, so every file is
                     hashed), in one long-lived process that ran the DAG once before (as a worker would):
                     Airflow's run duration, and the upload phase (first upload_batch start to last end)
  scheduler          the same first publish under a real scheduler with LocalExecutor (mapped uploads side
                     by side), triggered through the REST API; its processes are stopped (SIGSTOP) while the
                     other jobs run, so nothing of it runs beside them
  scheduler floor    a run of the DAG's floor on that deployment (bench/changes.py: the DAG's params, tasks,
                     dependencies and trigger rules, each task doing nothing, no batch planned): what the
                     scheduler itself costs a run of this shape, the part of the whole run no upload can shorten
  obstore PUTs       a labelled breakdown, not a user's job: the smallest --script-images folder's files, read
                     into memory before the clock starts, PUT by obstore at the upload step's concurrency with
                     and without the SHA-256 checksum every upload of ours sends (s5cmd sends none): what
                     verifying it costs the server
The order of the jobs turns each round (no job always runs first on an emptier server). Around every job the
CPU seconds of the S3 server (SeaweedFS) and of the job's own processes are read: the S3 server's ceiling on
this machine is all cores divided by the server's CPU seconds per object (what any client could reach if it
cost nothing), and the fastest client measured is reported beside it. Medians are compared.
Writes bench/results/uploads.md and uploads.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import obstore
import psutil
from obstore.store import S3Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: data, the peers' paths, results)
from changes import dags_with_floor  # noqa: E402  (the DAG's floor: its shape, each task doing nothing)

from devstack import local_airflow  # noqa: E402
from devstack.airflow_services import Airflow, migrate, service_env  # noqa: E402
from devstack.embedded_stack import ACCESS_KEY, REGION, SECRET_KEY, free_port  # noqa: E402

DAG_ID = "publish_product_images"
FLOOR_DAG_ID = "publish_product_images_floor"
RUN_TIMEOUT_S = 1800  # how long a Scheduled deployment waits for a run: a first publish of 100,000 images, say
SCRIPTS = ROOT / "scripts" / "s3"
CORES = os.cpu_count() or 1


class ServerCpu:
    """CPU seconds the S3 server (the SeaweedFS process) has used so far."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    def seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_process(argv: list[str], env: dict, server: ServerCpu) -> dict:
    """One whole process: its wall seconds, its own CPU seconds and the S3 server's during it."""
    cpu, served, started = children_cpu(), server.seconds(), time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, argv[:3]))} failed: {done.stderr[-2000:]}")
    return {"s": wall, "client_cpu_s": children_cpu() - cpu, "server_cpu_s": server.seconds() - served}


def bare_puts(folder: Path, state, server: ServerCpu, checksum: bool) -> dict:
    """PUTs alone: the folder's files read into memory first (untimed), then sent by obstore at the upload step's
    concurrency, with or without `x-amz-checksum-sha256`; everything else as the upload step's store."""
    # Imported here, not with the module: the dag.test worker imports this file before it configures Airflow.
    from include.catalog_publisher.defaults import DEFAULT_UPLOAD_CONCURRENCY

    bodies = [(path.name, path.read_bytes()) for path in sorted(folder.glob("*.jpg"))]
    config = {
        "endpoint": state.s3_endpoint,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "virtual_hosted_style_request": False,
    }
    if checksum:
        config["checksum_algorithm"] = "sha256"
    store = S3Store(state.bucket, config=config, client_options={"allow_http": True})
    prefix = f"bare-{uuid.uuid4().hex[:8]}"

    async def send() -> None:
        slots = asyncio.Semaphore(DEFAULT_UPLOAD_CONCURRENCY)

        async def put(name: str, body: bytes) -> None:
            async with slots:
                await obstore.put_async(store, f"{prefix}/{name}", body, attributes={"Content-Type": "image/jpeg"})

        await asyncio.gather(*(put(name, body) for name, body in bodies))

    cpu, served, started = time.process_time(), server.seconds(), time.monotonic()
    asyncio.run(send())
    wall = time.monotonic() - started
    cpu_s, server_cpu_s = time.process_time() - cpu, server.seconds() - served
    return {"s": wall, "client_cpu_s": cpu_s, "server_cpu_s": server_cpu_s, "objects": len(bodies)}


# -- the DAG under dag.test: one long-lived process, driven line by line -------------------------------------


class DagTestWorker:
    """A process that ran the DAG once (paying Airflow's one-off in-process start) and then runs first publishes
    on request, each with a fresh publisher home; its answers are JSON lines."""

    def __init__(self, home: Path) -> None:
        log = open(bench.RESULTS / "bench.log", "ab")  # noqa: SIM115 - the child's stderr, kept for its lifetime
        self.process = subprocess.Popen(
            [sys.executable, __file__, "dag-test-worker", str(home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )

    def publish(self, conf: dict, server: ServerCpu) -> dict:
        served = server.seconds()
        self.process.stdin.write(json.dumps(conf) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the dag.test worker ended (code {self.process.wait()}); see bench/results/bench.log")
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"dag.test first publish failed: {answer['error']}")
        return {**answer, "server_cpu_s": server.seconds() - served}

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(60)


def dag_test_worker(home: Path) -> None:
    """The worker's side: configure Airflow in-process, then one first publish per line of its input. Its answers
    go out on its own copy of stdout: what Airflow prints goes to stderr."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    local_airflow.configure(ROOT / ".airflow" / "bench", {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
    for line in sys.stdin:
        conf = json.loads(line)
        fresh_home(home)
        cpu = time.process_time()
        run = local_airflow.run_dag(DAG_ID, conf)
        if not run.succeeded:
            print(json.dumps({"error": run.task_states}), file=answers, flush=True)
            continue
        uploads = run.xcoms["merge_url_mapping"]["uploaded_images"]
        answer = {"run_s": run.run_s, "upload_s": run.durations.get("upload_batch", 0.0), "uploaded": uploads}
        print(
            json.dumps(
                {**answer, "client_cpu_s": time.process_time() - cpu, "durations": run.durations, "spans": run.spans}
            ),
            file=answers,
            flush=True,
        )


def fresh_home(home: Path) -> None:
    """A publisher home with nothing from an earlier run (no latest manifest, no published state): a first publish."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["CATALOG_PUBLISHER_HOME"] = str(home)


# -- the DAG under a real scheduler ----------------------------------------------------------------------


class Scheduled:
    """api-server, scheduler and dag-processor with LocalExecutor; paused (SIGSTOP) between its own runs."""

    def __init__(
        self,
        home: Path,
        dags: tuple[Path, tuple[str, ...]] | None = None,
        settings: dict[str, str | None] | None = None,
        run_timeout: float = RUN_TIMEOUT_S,
    ) -> None:
        """dags: (a DAG folder, the DAG ids to wait for); by default the DAG and its floor (no indexer to run after).
        settings: Airflow settings over the test harness's (service_env: a 1 s scheduler heartbeat, a 5 s DAG folder
        refresh); None unsets one."""
        self.publisher_home, self.run_timeout = home / "publisher", run_timeout
        airflow_home = home / "airflow"
        shutil.rmtree(airflow_home, ignore_errors=True)
        airflow_home.mkdir(parents=True)
        port = free_port()
        folder, dag_ids = dags or (dags_with_floor(), (DAG_ID, FLOOR_DAG_ID))
        deployment = {
            "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "CATALOG_PUBLISHER_HOME": str(self.publisher_home),
            "PUBLISHER_SCHEDULE": "none",  # no run of its own at start-up: only the measured ones
        }
        env = service_env(airflow_home, port, **{**deployment, **(settings or {})})
        env = {name: value for name, value in env.items() if value is not None}  # None: Airflow's own default
        migrate(env)
        self.airflow = Airflow(airflow_home, env, port)
        self.airflow.start()
        for dag_id in dag_ids:  # all stored before the dag-processor is stopped with the rest
            self.airflow.wait_for(lambda dag_id=dag_id: self.airflow.get(f"/api/v2/dags/{dag_id}")["dag_id"], dag_id)
        self.pause()

    def _signal(self, sig: int) -> None:
        """The services and every process they started (task processes run in process groups of their own)."""
        processes = [psutil.Process(p.pid) for p in self.airflow.processes]
        processes += [child for process in processes for child in process.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def pause(self) -> None:
        """Stop every process of the deployment once no run is left running: nothing of it runs beside the
        other jobs."""
        self.airflow.wait_for_no_run(self.run_timeout)  # an indexer run of 100,000 messages takes minutes
        self._signal(signal.SIGSTOP)

    def fresh(self) -> None:
        """Nothing known from an earlier run, for a first publish: the workers' publisher home emptied."""
        fresh_home(self.publisher_home)

    def publish(self, conf: dict, server: ServerCpu) -> dict:
        self.fresh()
        try:
            run, run_id, server_cpu = self.run_once(DAG_ID, conf, server)
            return {**self._timings(run, run_id), "server_cpu_s": server_cpu}
        finally:
            self.pause()

    def floor(self, server: ServerCpu) -> dict:
        """One run of the DAG's floor: Airflow's run duration."""
        try:
            run, _, server_cpu = self.run_once(FLOOR_DAG_ID, {}, server)
            return {"run_s": bench.span([run]), "server_cpu_s": server_cpu}
        finally:
            self.pause()

    def run_once(self, dag_id: str, conf: dict, server: ServerCpu) -> tuple[dict, str, float]:
        """Let the deployment run, trigger one run and wait for it: (the run, its id, the S3 server's CPU seconds
        during it). The caller pauses the deployment again once it has read what it needs."""
        self._signal(signal.SIGCONT)
        served = server.seconds()
        status, body = self.airflow.trigger(dag_id, conf)
        if status != 200:
            raise SystemExit(f"trigger refused ({status}): {body}")
        run = self.airflow.finished(dag_id, body["dag_run_id"], self.run_timeout)
        server_cpu = server.seconds() - served
        if run["state"] != "success":
            raise SystemExit(f"scheduled run of {dag_id} {run['state']}; logs in {self.airflow.home}")
        return run, body["dag_run_id"], server_cpu

    def _timings(self, run: dict, run_id: str) -> dict:
        """Airflow's run duration and the upload phase (first upload_batch start to last end)."""
        uploads = [t for t in self.airflow.task_instances(DAG_ID, run_id) if t["task_id"] == "upload_batch"]
        mapping = self.airflow.xcom(DAG_ID, run_id, "merge_url_mapping")
        return {
            "run_s": bench.span([run]),
            "upload_s": bench.span(uploads),
            "uploads": len(uploads),
            "uploaded": mapping["uploaded_images"],
        }

    def stop(self) -> None:
        self._signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.airflow.stop()


# -- one profile -----------------------------------------------------------------------------------------


def measure_profile(kb: tuple[int, int], args) -> dict:
    """Every job of one image profile, `repeats` rounds, on a stack of its own."""
    stack, state, env = bench.fresh_stack("bench-uploads")
    server, s3_env = ServerCpu(state.pids["seaweedfs"]), bench.s3_env(env)
    sizes = sorted({args.images, *args.script_images})
    folders = {n: bench.make_images(bench.DATA / f"images-{kb[0]}-{kb[1]}kb-{n}", n, kb=kb) for n in sizes}
    manifests = {n: _runbook_manifest(folders[n], s3_env) for n in args.script_images}
    catalog = bench.make_catalog(bench.DATA / f"catalog-{args.images}.json", args.images)
    topic = bench.make_topic(state.kafka_bootstrap, f"uploads-{uuid.uuid4().hex[:6]}")
    home = ROOT / ".airflow" / "bench-uploads-home"
    worker = DagTestWorker(home / "dag-test")
    scheduled = Scheduled(home / "scheduler") if args.scheduler else None
    runs: dict[str, list[dict]] = {}
    try:
        worker.publish(_conf(folders[args.images], catalog, state.bucket, "warm-up", topic), server)
        jobs = _jobs(args, state, s3_env, server, folders, manifests, catalog, topic, worker, scheduled)
        for round_ in range(args.repeats):
            turned = jobs[round_ % len(jobs) :] + jobs[: round_ % len(jobs)]
            for name, job in turned:
                print(f"{kb[0]}-{kb[1]} KB, round {round_ + 1}: {name}", file=sys.stderr)
                runs.setdefault(name, []).append(job())
    finally:
        worker.close()
        if scheduled:
            scheduled.stop()
        stack.stop()
        # Its objects (up to ~18 GB for both profiles) are of no use after: SeaweedFS sizes its volumes by the
        # free disk, and a full disk leaves the next stack (a test session's, say) without writable volumes.
        shutil.rmtree(stack.dir, ignore_errors=True)
    nbytes = {n: sum(p.stat().st_size for p in folders[n].glob("*.jpg")) for n in sizes}
    return {"kb": kb, "images": args.images, "bytes": nbytes, "runs": runs}


def _jobs(args, state, s3_env, server, folders, manifests, catalog, topic, worker, scheduled) -> list:
    """(name, job) pairs; each job runs once to a fresh prefix and returns its measures."""

    def s5cmd(n: int):
        folder, target = folders[n], f"s3://{state.bucket}/s5cmd-{uuid.uuid4().hex[:8]}/"
        return lambda: timed_process(
            [str(bench.S5CMD), "--endpoint-url", state.s3_endpoint, "cp", "--exclude", ".*", f"{folder}/*", target],
            s3_env,
            server,
        )

    def script(n: int):
        def job():
            prefix, mapping = (
                f"script-{uuid.uuid4().hex[:8]}",
                manifests[n].with_name(f"mapping-{uuid.uuid4().hex[:6]}.json"),
            )
            argv = [sys.executable, str(SCRIPTS / "upload_to_s3.py"), "--manifest-file", str(manifests[n])]
            argv += ["--bucket-name", state.bucket, "--prefix", prefix, "--output-file", str(mapping)]
            return timed_process(argv, s3_env, server)

        return job

    def dag(runner):
        def job():
            # A first publish: to a topic of its own too, as its home holds no published state; on a topic with
            # earlier rounds' messages the publish would first read them all back (more each round).
            run = f"dag-{uuid.uuid4().hex[:8]}"
            fresh_topic = bench.make_topic(state.kafka_bootstrap, f"{topic}-{run}")
            return _checked(
                runner.publish(_conf(folders[args.images], catalog, state.bucket, run, fresh_topic), server),
                args.images,
            )

        return job

    jobs = [(f"s5cmd cp {n}", s5cmd(n)) for n in sorted(folders)]
    jobs += [(f"upload_to_s3.py {n}", script(n)) for n in args.script_images]
    bare = min(folders)
    for label, checksum in (("SHA-256 checksum", True), ("no checksum", False)):
        jobs.append(
            (f"obstore PUTs {bare}, {label}", lambda c=checksum: bare_puts(folders[bare], state, server, checksum=c))
        )
    jobs.append(("dag.test", dag(worker)))
    if scheduled:
        jobs += [("scheduler", dag(scheduled)), ("scheduler floor", lambda: scheduled.floor(server))]
    return jobs


def _checked(answer: dict, images: int) -> dict:
    if answer["uploaded"] != images:
        raise SystemExit(f"a first publish uploaded {answer['uploaded']} images, not {images}")
    return answer


def _conf(images: Path, catalog: Path, bucket: str, prefix: str, topic: str) -> dict:
    """A first publish with the DAG's own defaults (batch size, upload concurrency), as a user triggers it."""
    return {"images_dir": str(images), "catalog_file": str(catalog), "bucket": bucket, "prefix": prefix, "topic": topic}


def _runbook_manifest(folder: Path, env: dict) -> Path:
    """The runbook's step 1 for a folder (untimed): the manifest upload_to_s3.py reads."""
    manifest = bench.DATA / f"runbook-{folder.name}" / "s3_upload_manifest.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        str(SCRIPTS / "prepare_s3_upload.py"),
        "--images-dir",
        str(folder),
        "--output-file",
        str(manifest),
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"prepare_s3_upload.py failed: {done.stderr[-2000:]}")
    return manifest


# -- the report ------------------------------------------------------------------------------------------


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarize(p: dict) -> dict:
    """Medians per job, the ratios the targets are about, and the S3 server's ceiling, for one profile."""
    runs, n = p["runs"], p["images"]
    peer = {size: _median(runs[f"s5cmd cp {size}"], "s") for size in p["bytes"]}
    rows = [
        (f"upload_to_s3.py, {size:,} images (whole process) vs s5cmd cp", peer[size] / _median(rs, "s"), ">= 1.0x")
        for size in sorted(p["bytes"])
        if (rs := runs.get(f"upload_to_s3.py {size}"))
    ]
    for name in ("dag.test", "scheduler"):
        if name in runs:
            rows.append(
                (f"{name}: upload phase vs s5cmd cp (throughput)", peer[n] / _median(runs[name], "upload_s"), ">= 1.1x")
            )
            rows.append(
                (
                    f"{name}: first publish, whole run vs s5cmd cp (time)",
                    _median(runs[name], "run_s") / peer[n],
                    "<= 1.5x",
                )
            )
    # Every object costs the server CPU; with all cores on it alone (a client that cost nothing) it would move
    # n objects in n x (its CPU seconds per object) / cores: its ceiling here. Measured on the pure upload jobs.
    uploads = [name for name in (f"s5cmd cp {n}", f"upload_to_s3.py {n}") if name in runs]
    cost = {name: _median(runs[name], "server_cpu_s") / n for name in uploads}
    ceiling_s = min(cost.values()) * n / CORES
    moved = {name: _median(runs[name], "s") for name in uploads}
    moved |= {
        f"{name} upload phase": _median(runs[name], "upload_s") for name in ("dag.test", "scheduler") if name in runs
    }
    fastest = min(moved, key=moved.get)
    floor = {"scheduler": _median(runs["scheduler floor"], "run_s")} if "scheduler floor" in runs else {}
    return {
        "checksum": _checksum_cost(runs),
        "floor_s": floor,
        "peer_s": peer,
        "rows": rows,
        "server_ms_per_object": {k: v * 1000 for k, v in cost.items()},
        "ceiling_s": ceiling_s,
        "moved_s": moved,
        "fastest": fastest,
    }


def _checksum_cost(runs: dict) -> dict | None:
    """The bare PUTs with the SHA-256 checksum against without it: the server's CPU an object, and the time."""
    bare = {name.rsplit(", ", 1)[1]: rs for name, rs in runs.items() if name.startswith("obstore PUTs ")}
    if set(bare) != {"SHA-256 checksum", "no checksum"}:
        return None
    with_it, without = bare["SHA-256 checksum"], bare["no checksum"]
    images = with_it[0]["objects"]
    return {
        "images": images,
        "server_ms_with": _median(with_it, "server_cpu_s") / images * 1000,
        "server_ms_without": _median(without, "server_cpu_s") / images * 1000,
        "time_ratio": _median(with_it, "s") / _median(without, "s"),
    }


def render(results: dict) -> str:
    lines = [
        f"Uploads like with like, {results['started']}, {results['machine']}, embedded stack: `bench/uploads.py` "
        "(medians of alternating rounds; every job from the same files to fresh prefixes of the same bucket)",
        "",
    ]
    for p in results["profiles"]:
        lines += _render_profile(p)
    return "\n".join(lines)


def _render_profile(p: dict) -> list[str]:
    s, n, runs = p["summary"], p["images"], p["runs"]
    mb = p["bytes"][n] / 1e6
    lines = [
        f"### JPEGs of {p['kb'][0]}-{p['kb'][1]} KB: {n:,} images, {mb:,.0f} MB; s5cmd cp {s['peer_s'][n]:.2f}s "
        f"({n / s['peer_s'][n]:,.0f} img/s)",
        "",
        "| what | ratio | target | met |",
        "|---|---|---|---|",
    ]
    for what, ratio, target in s["rows"]:
        met = ratio >= float(target[3:-1]) if target.startswith(">=") else ratio <= float(target[3:-1])
        lines.append(f"| {what} | {ratio:.2f}x | {target} | {'yes' if met else 'no'} |")
    lines += _render_floor(s, runs, s["peer_s"][n])
    lines += [
        "",
        f"The S3 server's ceiling: {s['ceiling_s']:.2f}s for the {n:,} objects ({n / s['ceiling_s']:,.0f} img/s), "
        f"all {CORES} cores on the server alone at its lowest CPU cost per object measured "
        f"({', '.join(f'{k}: {v:.2f} ms' for k, v in s['server_ms_per_object'].items())}).",
        "",
        "| moving the objects | seconds | of the ceiling's throughput |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {sec:.2f}s | {s['ceiling_s'] / sec:.0%} |" for name, sec in s["moved_s"].items()]
    lines += ["", f"Fastest client measured: {s['fastest']}.", ""]
    if c := s.get("checksum"):
        lines += [
            f"The SHA-256 checksum every upload of ours sends (`x-amz-checksum-sha256`; the server verifies it, "
            f"s5cmd sends none), from bare obstore PUTs of {c['images']:,} of these files read into memory first: "
            f"the server's CPU {c['server_ms_with']:.2f} ms an object with it, {c['server_ms_without']:.2f} ms "
            f"without ({c['server_ms_with'] / c['server_ms_without'] - 1:+.0%}); the PUTs take "
            f"{c['time_ratio']:.2f}x the time.",
            "",
        ]
    lines += ["Where the CPU goes (medians per job):", ""]
    lines += ["| job | wall | its processes' CPU | S3 server's CPU | cores busy |", "|---|---|---|---|---|"]
    for name, rs in runs.items():
        wall = _median(rs, "s" if "s" in rs[0] else "run_s")
        client = f"{_median(rs, 'client_cpu_s'):.2f}s" if "client_cpu_s" in rs[0] else "(several processes)"
        server = _median(rs, "server_cpu_s")
        busy = f"{(_median(rs, 'client_cpu_s') + server) / wall:.2f}" if "client_cpu_s" in rs[0] else "-"
        lines.append(f"| {name} | {wall:.2f}s | {client} | {server:.2f}s | {busy} |")
    lines += ["", f"All runs: {json.dumps(runs)}", ""]
    return lines


def _render_floor(s: dict, runs: dict, peer: float) -> list[str]:
    """What the scheduler itself costs a run of this DAG's shape, against s5cmd cp and the whole run."""
    if "scheduler" not in s.get("floor_s", {}):
        return []
    floor, whole = s["floor_s"]["scheduler"], _median(runs["scheduler"], "run_s")
    return [
        "",
        f"Airflow's floor under the scheduler (the DAG's floor, each task doing nothing, on the same deployment, "
        f"alternating with the other jobs): {floor:.2f}s a run, {floor / peer:.2f}x s5cmd cp by itself. The first "
        f"publish's whole run above that floor: {whole - floor:.2f}s, {(whole - floor) / peer:.2f}x s5cmd cp.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--script-images", default="3000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profiles", default="25-35,100-140", help="JPEG sizes in KB, low-high, comma-separated")
    parser.add_argument("--no-scheduler", dest="scheduler", action="store_false")
    args = parser.parse_args()
    args.script_images = [int(n) for n in args.script_images.split(",") if n]
    results: dict = {"machine": f"{CORES} cores", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "profiles": []}
    for profile in args.profiles.split(","):
        low, high = (int(x) for x in profile.split("-"))
        measured = measure_profile((low, high), args)
        results["profiles"].append({**measured, "summary": summarize(measured)})
    bench.save_results("uploads", results, render(results))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["dag-test-worker"]:
        dag_test_worker(Path(sys.argv[2]))
    else:
        sys.exit(main())
