#!/usr/bin/env python
"""Bucket to bucket (part of make bench): images in a landing bucket (images_dir s3://landing/in) published by the
DAG under a real scheduler, whole run against whole run, against `s5cmd cp 's3://landing/in/*' s3://dst/prefix/`,
`s5cmd sync` and `aws s3 sync s3://landing/in s3://dst/prefix`, on the same SeaweedFS.

    .venv/bin/python bench/bucket_copies.py [--images 10000] [--large 100000] [--repeats 3]

On a fresh embedded stack (.stack/bench-bucket/), JPEGs of 25-35 KB (bench/data/) are put in the landing bucket
once (untimed). At --images, `--repeats` rounds, the order of the jobs turning each round:
  s5cmd cp            every object of the landing prefix to a fresh prefix (the whole process)
  scheduler first     a first publish on the deployment a user starts (scheduled_runs': LocalExecutor with the
                      launcher's settings, the publisher and indexer DAGs, each task its own process), triggered
                      through the REST API: a fresh publisher home (no manifest known, so every object is read once
                      for its checksums) to a fresh prefix and topic; Airflow's run duration
  scheduler no-change the same run again once its indexer run is done, nothing changed: the listings alone, no
                      object read or copied, a quiet day (two tasks run, the rest skipped)
  aws s3 sync         a re-sync of the landing prefix to a prefix it synced before (nothing to copy)
  s5cmd sync          the same with s5cmd
Around every job the S3 server's (SeaweedFS's) CPU seconds are read: the server's ceiling for copies on this
machine is all cores divided by its CPU seconds per object copied by `s5cmd cp` (what any client could reach if
it cost nothing). The first round's first publish is also reported alone: the deployment's cold first run.
At --large (0: skip), one first publish and one no-change run under the scheduler, with `s5cmd cp` and
`s5cmd sync` beside them, and the peak memory (VmHWM, read every 0.1 s while the task runs) of every task process.
Writes bench/results/bucket_copies.md and bucket_copies.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: data, the peers' paths, results)
from scheduled_runs import DAG_IDS, LAUNCHER_SETTINGS, Jobs, phase_table, user_dags_folder  # noqa: E402
from uploads import Scheduled, ServerCpu, timed_process  # noqa: E402

KB = (25, 35)
LANDING = "landing"
CORES = os.cpu_count() or 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="the size compared with every peer (0: skip)")
    parser.add_argument("--large", type=int, default=100_000, help="one run at this size, memory included (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stack, state, env = bench.fresh_stack("bench-bucket")
    os.environ["PUBLISHER_ALLOWED_INPUTS"] += f",s3://{LANDING}"  # the deployment below reads the landing bucket
    server, s3_env = ServerCpu(state.pids["seaweedfs"]), bench.s3_env(env)
    s3 = Peers(state, s3_env, server)
    s3.make_bucket(LANDING)
    results: dict = {"machine": f"{CORES} cores", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "kb": KB}
    # The deployment a user starts (scheduled_runs'): the publisher and the indexer it starts, the launcher's settings.
    home = ROOT / ".airflow" / "bench-bucket-home"
    scheduled = Scheduled(home, (user_dags_folder(), DAG_IDS), LAUNCHER_SETTINGS)
    jobs = Jobs(scheduled, state, env)
    try:
        if args.images:
            results["small"] = measure(jobs, s3, state, args.images, args.repeats, with_aws=True)
            bench.save_results("bucket_copies", results, render(results))  # kept, whatever happens at the larger size
        if args.large:
            results["large"] = measure(jobs, s3, state, args.large, 1, with_aws=False, memory=True)
    finally:
        jobs.close()
        scheduled.stop()
        stack.stop()
        subprocess.run(["rm", "-rf", str(stack.dir)], check=False)  # gigabytes of objects of no use after
    if args.images:  # a run of the larger size alone (--images 0) is a look at it, not the part's stored table
        bench.save_results("bucket_copies", results, render(results))
    else:
        print(render(results))
    return 0


class Peers:
    """The peers' jobs on the bench's stack: s5cmd and the AWS CLI, each a whole process."""

    def __init__(self, state, env: dict, server: ServerCpu) -> None:
        self.state, self.env, self.server = state, env, server

    def make_bucket(self, name: str) -> None:
        self.run([str(bench.AWS), "--endpoint-url", self.state.s3_endpoint, "s3", "mb", f"s3://{name}"])

    def s5cmd(self, *argv: str) -> dict:
        return self.run([str(bench.S5CMD), "--endpoint-url", self.state.s3_endpoint, *argv])

    def aws_sync(self, source: str, target: str) -> dict:
        argv = [str(bench.AWS), "--endpoint-url", self.state.s3_endpoint, "s3", "sync", "--only-show-errors"]
        return self.run([*argv, source, target])

    def run(self, argv: list[str]) -> dict:
        return timed_process(argv, self.env, self.server)


def fill_landing(s3: Peers, count: int) -> str:
    """The landing prefix of `count` images (put once, untimed): s3://landing/in-<count>."""
    folder = bench.make_images(bench.DATA / f"images-{KB[0]}-{KB[1]}kb-{count}", count, kb=KB)
    prefix = f"in-{count}"
    s3.s5cmd("cp", "--exclude", ".*", f"{folder}/*", f"s3://{LANDING}/{prefix}/")
    return prefix


def measure(jobs: Jobs, s3: Peers, state, count: int, repeats: int, *, with_aws: bool, memory: bool = False) -> dict:
    """Every job at one size, `repeats` rounds; the peers' sync targets synced once before (untimed)."""
    prefix = fill_landing(s3, count)
    source = f"s3://{LANDING}/{prefix}"
    catalog = bench.make_catalog(bench.DATA / f"catalog-{count}.json", count)
    synced = {"s5cmd": f"s3://{state.bucket}/s5sync-{count}/", "aws": f"s3://{state.bucket}/awssync-{count}"}
    s3.s5cmd("sync", f"{source}/*", synced["s5cmd"])
    if with_aws:
        s3.aws_sync(source, synced["aws"])
    ours = Ours(jobs, source, catalog, state, count, memory)
    jobs = [
        ("s5cmd cp", lambda: s3.s5cmd("cp", f"{source}/*", f"s3://{state.bucket}/s5cp-{uuid.uuid4().hex[:8]}/")),
        ("scheduler first and no-change", ours.first_and_again),
        ("s5cmd sync", lambda: s3.s5cmd("sync", f"{source}/*", synced["s5cmd"])),
    ]
    if with_aws:
        jobs.append(("aws s3 sync", lambda: s3.aws_sync(source, synced["aws"])))
    runs: dict[str, list[dict]] = {}
    for round_ in range(repeats):
        for name, job in jobs[round_ % len(jobs) :] + jobs[: round_ % len(jobs)]:
            print(f"{count} objects, round {round_ + 1}: {name}", file=sys.stderr)
            runs.setdefault(name, []).append(job())
    return {"objects": count, "runs": runs}


class Ours:
    """A first publish of the landing prefix under the scheduler, then the same run with nothing changed (a quiet
    day: two tasks), each measured as scheduled_runs measures a run (Jobs.measured_run)."""

    def __init__(self, jobs: Jobs, source, catalog, state, count, memory: bool) -> None:
        self.jobs, self.count, self.memory = jobs, count, memory
        self.conf = {"images_dir": source, "catalog_file": str(catalog), "bucket": state.bucket}

    def first_and_again(self) -> dict:
        name = f"ours-{uuid.uuid4().hex[:8]}"
        conf = {**self.conf, "prefix": name, "topic": name}  # created by the publish, as a user's is (compacted)
        first = self._with_peaks(lambda: self.jobs.measured_run(conf, fresh=True))
        if first["uploaded"] != self.count:
            raise SystemExit(f"a first publish uploaded {first['uploaded']} images, not {self.count}")
        again = self._with_peaks(lambda: self.jobs.daily(conf, quiet=True))
        return {"first": first, "again": again}

    def _with_peaks(self, run) -> dict:
        """A run and, with `memory`, the peak memory of each task process it started (mapped ones: the largest), and
        of the other processes the deployment started meanwhile (supervisors, the indexer's tasks)."""
        peaks = TaskPeaks(self.jobs.deployment) if self.memory else contextlib.nullcontext({})
        with peaks as peak_rss:
            answer = run()
        by_task: dict[str, float] = {}
        for instance, task in answer["instances"].items():
            if instance in peak_rss:
                by_task[task] = max(by_task.get(task, 0.0), peak_rss[instance])
        others = [mb for who, mb in peak_rss.items() if who not in answer["instances"]]
        answer |= {"peak_rss_mb_by_task": by_task, "peak_rss_mb_other": max(others, default=None)}
        return {**answer, "peak_rss_mb": max(peak_rss.values(), default=None)}


class TaskPeaks(contextlib.AbstractContextManager):
    """The peak memory (VmHWM, MB) of every process the deployment starts while the block runs (its task processes,
    `airflow worker -- <task instance id>`, by that id; any other by its pid), read every 0.1 s; the services' own
    processes, there before, are left out."""

    def __init__(self, scheduled) -> None:
        self.scheduled, self.peaks, self.stop = scheduled, {}, threading.Event()
        self.before = {p.pid for p in self._processes()}

    def _processes(self) -> list[psutil.Process]:
        roots = [psutil.Process(p.pid) for p in self.scheduled.airflow.processes]
        return roots + [child for root in roots for child in root.children(recursive=True)]

    def _watch(self) -> None:
        while not self.stop.wait(0.1):
            for process in self._processes():
                if process.pid in self.before:
                    continue
                with contextlib.suppress(psutil.Error, OSError, ValueError):
                    status = Path(f"/proc/{process.pid}/status").read_text()
                    hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
                    command = " ".join(process.cmdline()).strip()  # setproctitle's title: one string, padded
                    # A task's own process is "airflow worker -- <task instance id>"; any other (its supervisor, say)
                    # is kept by its title and pid.
                    is_task = command.startswith("airflow worker -- ")
                    who = command.split(" -- ")[-1].strip() if is_task else f"{command[:40]} [{process.pid}]"
                    if hwm:  # a zombie has none
                        self.peaks[who] = max(self.peaks.get(who, 0), hwm[0] / 1024)

    def __enter__(self) -> dict:
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self.peaks

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


# -- the report ------------------------------------------------------------------------------------------


def _median(values) -> float:
    return statistics.median(values)


def summarize(size: dict) -> dict:
    """Medians, the ratios the targets are about, the server's ceiling for copies."""
    runs, n = size["runs"], size["objects"]
    ours = runs["scheduler first and no-change"]
    s = {
        "first_s": _median(r["first"]["run_s"] for r in ours),
        "cold_first_s": ours[0]["first"]["run_s"],
        "again_s": _median(r["again"]["run_s"] for r in ours),
        "s5cmd_cp_s": _median(r["s"] for r in runs["s5cmd cp"]),
        "s5cmd_sync_s": _median(r["s"] for r in runs["s5cmd sync"]),
    }
    if "aws s3 sync" in runs:
        s["aws_sync_s"] = _median(r["s"] for r in runs["aws s3 sync"])
    server_per_copy = _median(r["server_cpu_s"] for r in runs["s5cmd cp"]) / n
    s["server_ceiling_per_s"] = CORES / server_per_copy if server_per_copy else None
    upload_phase = _median(r["first"]["upload_s"] for r in ours)
    s["ours_copies_per_s"] = n / upload_phase if upload_phase else None
    s["s5cmd_copies_per_s"] = n / s["s5cmd_cp_s"]
    peaks = [r[k]["peak_rss_mb"] for r in ours for k in ("first", "again") if r[k]["peak_rss_mb"] is not None]
    s["peak_task_rss_mb"] = max(peaks) if peaks else None
    others = [r[k].get("peak_rss_mb_other") for r in ours for k in ("first", "again")]
    s["peak_other_mb"] = max((mb for mb in others if mb is not None), default=None)
    s["peak_by_task"] = {}
    for r in ours:
        for run in ("first", "again"):
            for task, mb in r[run].get("peak_rss_mb_by_task", {}).items():
                s["peak_by_task"][f"{task} ({run})"] = max(s["peak_by_task"].get(f"{task} ({run})", 0.0), mb)
    return s


def render(r: dict) -> str:
    lines = [
        f"## Bucket to bucket: a landing bucket published under the scheduler ({r['started']}, {r['machine']})",
        "",
        "`bench/bucket_copies.py`: JPEGs of 25-35 KB in a landing bucket, published to another bucket of the same "
        "SeaweedFS by server-side copies. Ours: Airflow's run duration under LocalExecutor (each task its own "
        "process), warm median and the deployment's cold first run; peers: the whole process.",
        "",
        "| objects | run | ours | peer | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("small", "large"):
        if key not in r:
            continue
        s, n = summarize(r[key]), r[key]["objects"]
        rows = [
            ("first publish (warm median)", s["first_s"], "`s5cmd cp`", s["s5cmd_cp_s"], "<= 1.5x"),
            ("first publish (cold first run)", s["cold_first_s"], "`s5cmd cp`", s["s5cmd_cp_s"], ""),
            ("no-change re-run", s["again_s"], "`s5cmd sync`", s["s5cmd_sync_s"], "<= 1.5x"),
        ]
        if "aws_sync_s" in s:
            rows.append(("no-change re-run", s["again_s"], "`aws s3 sync`", s["aws_sync_s"], "<= 1.0x"))
        for run, ours, peer, theirs, target in rows:
            lines.append(f"| {n:,} | {run} | {ours:.2f} s | {peer} {theirs:.2f} s | {ours / theirs:.2f}x | {target} |")
    lines.append("")
    for key in ("small", "large"):
        if key not in r:
            continue
        s, n = summarize(r[key]), r[key]["objects"]
        ceiling = f"{s['server_ceiling_per_s']:,.0f} copies/s" if s["server_ceiling_per_s"] else "not measured"
        lines.append(
            f"- {n:,} objects: the server's ceiling for copies on this machine {ceiling} (all cores over SeaweedFS's "
            f"CPU seconds per copy of `s5cmd cp`); `s5cmd cp` {s['s5cmd_copies_per_s']:,.0f}/s; ours, over the "
            f"upload phase (first upload task's start to the last one's end), {s['ours_copies_per_s'] or 0:,.0f}/s."
        )
        if s["peak_task_rss_mb"] is not None:
            lines.append(f"  - peak memory of any task process: {s['peak_task_rss_mb']:.0f} MB (target: under 300 MB)")
            by_task = ", ".join(f"{task} {mb:.0f} MB" for task, mb in sorted(s["peak_by_task"].items()))
            lines.append(f"  - peak memory by task (first publish, no-change run): {by_task or 'not attributed'}")
            if s["peak_other_mb"] is not None:
                lines.append(f"  - peak memory of the deployment's other new processes: {s['peak_other_mb']:.0f} MB")
    return "\n".join(lines + _phase_tables(r)) + "\n"


def _phase_tables(r: dict) -> list[str]:
    """Where each task's time goes, per size (scheduled_runs' phases: queue, launch, parse, work, finish)."""
    lines = []
    for key in ("small", "large"):
        if key in r:
            ours, n = r[key]["runs"]["scheduler first and no-change"], r[key]["objects"]
            lines += ["", f"Where each task's time goes at {n:,} objects (median seconds of its instances):", ""]
            lines += phase_table("first publish", [run["first"] for run in ours])
            lines += phase_table("no-change re-run", [run["again"] for run in ours])
    return lines


if __name__ == "__main__":
    sys.exit(main())
