#!/usr/bin/env python
"""Daily runs, whole run against whole run: a re-run with nothing changed, and one with one changed image, one
catalog-only edit and one removed product, against `aws s3 sync` and `s5cmd sync` over the same folder and bucket
(part of make bench).

    .venv/bin/python bench/changes.py [--images 10000] [--large 100000] [--repeats 3]

On a fresh embedded stack (.stack/bench-changes/) and JPEGs of 25-35 KB (bench/data/), for each size: in one
process, as a long-lived worker runs them, the DAG publishes the folder once, then re-runs `--repeats` times
with nothing changed, then `--repeats` times each after one more image was rewritten, one more product's price
edited and one more product removed from the catalog (each must upload exactly one image and send two messages
and one tombstone). A run's time is Airflow's own run duration (the DagRun's start to end, every task included);
task durations are kept as a labelled breakdown. Then `s5cmd sync` and (at --images) `aws s3 sync` of the
same folder to the prefix the DAG wrote, `--repeats` times each, with nothing to do. Medians are compared.
The first publish also pays the process's one-off start of Airflow's in-process execution API, so it is
reported apart. Each no-change run alternates with a run of the DAG's floor: the same tasks,
dependencies, trigger rules and params, each task doing nothing (what Airflow itself costs a run of this
shape), so the work above the floor is reported too. Writes bench/results/changes.md and changes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: data, child processes, the peers' paths)

from devstack import local_airflow  # noqa: E402

KB = (25, 35)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000, help="the size compared with s5cmd sync only (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stack, state, env = bench.fresh_stack("bench-changes")
    results: dict = {"machine": f"{os.cpu_count()} cores", "started": time.strftime("%Y-%m-%d %H:%M:%S"), "kb": KB}
    try:
        results["small"] = measure_size(state, env, args.images, args.repeats, with_aws=True, with_changes=True)
        if args.large:
            results["large"] = measure_size(state, env, args.large, args.repeats, with_aws=False, with_changes=True)
    finally:
        stack.stop()
    bench.save_results("changes", results, render(results))
    return 0


def measure_size(state, env, count: int, repeats: int, *, with_aws: bool, with_changes: bool) -> dict:
    """The DAG's runs (one process, see _daily_runs), then the peers' syncs of the same folder to the same prefix."""
    images = bench.make_images(bench.DATA / f"images-{KB[0]}-{KB[1]}kb-{count}", count, kb=KB)
    catalog = bench.make_catalog(bench.DATA / f"catalog-{count}.json", count)
    bucket, prefix = state.bucket, f"daily-{count}-{uuid.uuid4().hex[:6]}"
    topic = f"daily-{uuid.uuid4().hex[:6]}"  # created by the first publish, as a user's is (compacted)
    print(f"{count} images: DAG runs", file=sys.stderr)
    spec = {"images": str(images), "catalog": str(catalog), "bucket": bucket, "prefix": prefix, "topic": topic}
    runs = _child({**spec, "repeats": repeats, "changes": with_changes})
    s3_env, target = bench.s3_env(env), f"s3://{bucket}/{prefix}/"
    s5, aws = [], []
    for _ in range(repeats):
        s5cmd_sync = [str(bench.S5CMD), "--endpoint-url", state.s3_endpoint, "sync", f"{images}/", target]
        s5.append(bench.timed_cli(s5cmd_sync, s3_env))
        if with_aws:
            aws_sync = [str(bench.AWS), "s3", "sync", "--only-show-errors", "--endpoint-url", state.s3_endpoint]
            aws.append(bench.timed_cli([*aws_sync, str(images), target], s3_env))
    return {"images": count, **runs, "s5cmd_sync_s": s5, "aws_sync_s": aws}


def _child(spec: dict) -> dict:
    """Run _daily_runs in a fresh process (its answer is its last stdout line)."""
    log = bench.RESULTS / "bench.log"
    with open(log, "ab") as err:
        done = subprocess.run(
            [sys.executable, __file__, "child", json.dumps(spec)], stdout=subprocess.PIPE, stderr=err, env=os.environ
        )
    if done.returncode:
        raise SystemExit(f"the DAG runs failed (code {done.returncode}); see {log}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _daily_runs(spec: dict) -> dict:
    """In one process, as a long-lived worker: the first publish (which also pays the process's one-off start of
    Airflow's in-process execution API), `repeats` runs with nothing changed, then (changes) `repeats` runs each
    after one more image was rewritten and one more product removed."""
    dags = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags_with_floor(with_indexer=True))}
    local_airflow.configure(ROOT / ".airflow" / "bench", {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING", **dags})
    images, catalog = Path(spec["images"]), Path(spec["catalog"])

    def publish(catalog_file: Path):
        conf = json.loads(bench.publish_conf(images, catalog_file, spec["bucket"], spec["prefix"], spec["topic"]))
        run = local_airflow.run_dag("publish_product_images", conf)
        if not run.succeeded:
            raise SystemExit(f"publish_product_images failed: {run.task_states}")
        return run

    first = publish(catalog)
    indexed = local_airflow.run_dag(  # as the topic's asset starts it: a quiet day needs the indexer caught up
        "index_product_catalog", {"topic": spec["topic"], "catalog_file": first.result("update_catalog")["catalog"]}
    )
    if not indexed.succeeded:
        raise SystemExit(f"index_product_catalog failed: {indexed.task_states}")
    no_change, floor = [], []
    for _ in range(spec["repeats"]):  # alternating: the DAG with nothing to do, then its shape doing nothing
        no_change.append(publish(catalog))
        floor.append(local_airflow.run_dag("publish_product_images_floor"))
    for run in no_change:
        _check(run, uploaded=0, published=0, removed=0)
    answer = {
        "first_publish_s": first.run_s,
        "no_change_s": [r.run_s for r in no_change],
        "floor_s": [r.run_s for r in floor],
        "no_change_breakdown": _median_breakdown([r.durations for r in no_change]),
    }
    if spec["changes"]:
        changed = _change_runs(images, catalog, spec["repeats"], publish)
        breakdown = _median_breakdown([r.durations for r in changed])
        answer["changed"] = {"runs_s": [r.run_s for r in changed], "breakdown": breakdown}
    return answer


FLOOR_BODY = """def publish_product_images():
    @task
    def nothing(*_upstream) -> dict:
        return {}

    @task
    def one_shard(shard) -> dict:
        return {}

    @task
    def no_batches(_parts, ti=None) -> list:
        from airflow.sdk.exceptions import DownstreamTasksSkipped

        ti.xcom_push(key="manifest", value={})
        raise DownstreamTasksSkipped(tasks=["upload_batch"])  # as plan_batches does when there is nothing to upload

    @task
    def upload_nothing(batch, manifest) -> dict:
        return {}

    manifest = one_shard.override(task_id="build_manifest").expand(shard=manifest_shards())
    batches = no_batches.override(task_id="plan_batches")(manifest)
    manifest = batches["manifest"]
    uploads = upload_nothing.override(task_id="upload_batch").partial(manifest=manifest).expand(batch=batches)
    mapping = nothing.override(task_id="merge_url_mapping", trigger_rule="none_failed")(uploads)
    catalog = nothing.override(task_id="update_catalog")(mapping, manifest)
    nothing.override(task_id="delete_removed_images")(
        nothing.override(task_id="publish_to_kafka")(catalog, manifest), manifest, catalog
    )


publish_product_images()
"""


def dags_with_floor(with_indexer: bool = False) -> Path:
    """A DAG folder holding publish_product_images and its floor: the DAG file's own head (its @dag call: the
    params every task validates, default_args, schedule) over a body of tasks that do nothing, with the same
    ids, dependencies, trigger rules and mapping, planning no batch (dag.test runs only DAGs of a DAG folder);
    with_indexer: index_product_catalog too."""
    folder = bench.DATA / ("dags-with-floor-and-indexer" if with_indexer else "dags-with-floor")
    folder.mkdir(parents=True, exist_ok=True)
    source = (ROOT / "dags" / "publish_product_images.py").read_text()
    head = source[: source.index("def publish_product_images():")]
    head = head.replace('dag_id="publish_product_images"', 'dag_id="publish_product_images_floor"')
    (folder / "publish_product_images_floor.py").write_text(head + FLOOR_BODY)
    for name in ("publish_product_images.py", "index_product_catalog.py")[: 1 + with_indexer]:
        real = folder / name
        real.unlink(missing_ok=True)
        real.symlink_to(ROOT / "dags" / name)
    return folder


def _change_runs(images: Path, catalog: Path, repeats: int, publish) -> list:
    """Each run: one more image rewritten (new bytes, same name), one more product's price edited in the catalog
    (no new image) and one more product gone from the catalog; each must do exactly 1 upload, 2 messages and 1
    tombstone."""
    products = json.loads(catalog.read_text())
    changed_catalog = bench.DATA / f"catalog-{len(products)}-changed.json"
    runs = []
    for n in range(repeats):
        picture = images / f"PROD-{n:07d}.jpg"
        picture.write_bytes(picture.read_bytes() + f"changed {n} {time.time()}".encode())
        removed = {f"PROD-{len(products) - 1 - i:07d}" for i in range(n + 1)}
        edited = {f"PROD-{len(products) // 2 + i:07d}": 1000 + i for i in range(n + 1)}  # earlier edits stay
        kept = [{**p, "price": edited[p["product_id"]]} if p["product_id"] in edited else p for p in products]
        changed_catalog.write_text(json.dumps([p for p in kept if p["product_id"] not in removed]))
        run = publish(changed_catalog)
        _check(run, uploaded=1, published=2, removed=1)
        runs.append(run)
    return runs


def _check(run, *, uploaded: int, published: int, removed: int) -> None:
    """The run did exactly the work it should have: so many uploads, messages and tombstones."""
    kafka = run.result("publish_to_kafka")
    got = (run.result("merge_url_mapping")["uploaded_images"], kafka["published"], kafka["removed"])
    if got != (uploaded, published, removed):
        raise SystemExit(f"expected (uploads, messages, tombstones) = {(uploaded, published, removed)}, got {got}")


def _median_breakdown(runs: list[dict]) -> dict:
    return {task: statistics.median(r.get(task, 0.0) for r in runs) for task in runs[0]}


def _changed_rows(r: dict) -> str:
    """The changed run (one changed image, one catalog-only edit, one removed product: 1 upload, 2 messages, 1
    tombstone) against the no-change run of the same size: its extra time, and the ratio at the large size."""
    lines = [
        "| changed run (1 upload, 2 messages, 1 tombstone) | changed | no-change | extra | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for size, target in (("small", "extra ≤ 0.6 s"), ("large", "≤ 1.2x")):
        if size not in r or "changed" not in r[size]:
            continue
        changed, same = statistics.median(r[size]["changed"]["runs_s"]), statistics.median(r[size]["no_change_s"])
        lines.append(
            f"| {r[size]['images']:,} images | {changed:.2f}s | {same:.2f}s | {changed - same:+.2f}s | "
            f"{changed / same:.2f}x | {target} |"
        )
    return "\n".join(lines)


def render(r: dict) -> str:
    small, lines = r["small"], []
    no_change = statistics.median(small["no_change_s"])
    rows = [
        ("no-change re-run vs aws s3 sync", no_change, statistics.median(small["aws_sync_s"]), "≤ 1.0x"),
        ("no-change re-run vs s5cmd sync", no_change, statistics.median(small["s5cmd_sync_s"]), "≤ 1.5x"),
    ]
    if "large" in r:
        large = r["large"]
        rows.append(
            (
                f"no-change re-run vs s5cmd sync, {large['images']:,} images",
                statistics.median(large["no_change_s"]),
                statistics.median(large["s5cmd_sync_s"]),
                "≤ 1.0x",
            )
        )
    lines += [
        f"Daily runs, {r['started']}, {r['machine']}, embedded stack, JPEGs of {r['kb'][0]}-{r['kb'][1]} KB, "
        f"{small['images']:,} images unless said: `bench/changes.py` (medians of {len(small['no_change_s'])})",
        "",
        "| what | ours (whole run) | peer | ratio (time) | target |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {what} | {a:.2f}s | {b:.2f}s | {a / b:.2f}x | {t} |" for what, a, b, t in rows]
    lines += ["", _changed_rows(r), ""]
    floor = statistics.median(small["floor_s"])
    aws, s5 = statistics.median(small["aws_sync_s"]), statistics.median(small["s5cmd_sync_s"])
    lines += [
        "",
        f"Airflow's own floor for a run of this DAG under dag.test (its tasks, dependencies, trigger rules and "
        f"params, each task doing nothing and no batch planned; alternating with the "
        f"no-change runs): {floor:.2f}s, {floor / aws:.2f}x aws s3 sync and {floor / s5:.2f}x s5cmd sync by itself. "
        f"The no-change run's work above that floor: {no_change - floor:.2f}s "
        f"({(no_change - floor) / aws:.2f}x aws s3 sync, {(no_change - floor) / s5:.2f}x s5cmd sync).",
    ]
    lines += ["", "Breakdown of the no-change run (median seconds per task, first start to last end):", ""]
    lines += [f"- {task}: {s:.2f}s" for task, s in small["no_change_breakdown"].items()]
    lines += ["", f"All runs (s): {json.dumps({k: v for k, v in small.items() if k.endswith('_s')})}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        print(json.dumps(_daily_runs(json.loads(sys.argv[2]))))
    else:
        sys.exit(main())
