#!/usr/bin/env python
"""Planning at scale: the memory and time of planning an upload against a prefix of 1,000,000 objects, and of
building the manifest of 1,000,000 files in 2 shards against one task (part of make bench).

    .venv/bin/python bench/scale.py [--objects 1000000] [--files 1000000]

Planning is upload.plan_upload, what the DAG's plan_batches and the runbook's upload_to_s3.py both run: the
manifest (in object-key order) and the bucket's listing (S3 lists in key order) are read side by side in one
pass. The prefix is built once, tiny objects put with obstore (several minutes), in an embedded stack kept in
.stack/bench-scale/ and reused by later runs (a marker object says the prefix is complete). The manifest lists
every object, 1 in 100 with another MD5 (so it is planned for upload, the rest found unchanged), and is written
in key order as build_manifest writes it. Each measure runs in a fresh process; its peak RSS is its own VmHWM.
For reference, the same listing held in a dict, as planning held it before, in its own process too.

The manifest: --files small JPEGs (5-8 KB, made once in bench/data/), a cold first build with nothing known,
by one process (build_manifest as one task) against 2 processes at once, one per shard, as 2 mapped
build_manifest tasks on this 2-core machine, followed by the merge plan_batches does (wall time from the
shards' start to the merge's end). Writes bench/results/scale.md and scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: results folder, own_peak_rss)

from devstack.embedded_stack import EmbeddedStack, isolate_from_caller  # noqa: E402

BODY = b"x"  # every object's content: its ETag is this MD5
PUTS_IN_FLIGHT = 256


def key(prefix: str, number: int) -> str:
    return f"{prefix}/PROD-{number:07d}.jpg"


def fill_prefix(store, prefix: str, count: int) -> float:
    """Put `count` tiny objects under prefix (unless a marker says it was done); seconds spent."""
    import obstore

    marker = f"{prefix}/.complete-{count}"
    try:
        obstore.head(store, marker)
        return 0.0
    except FileNotFoundError:
        pass
    started = time.monotonic()

    async def put_all() -> None:
        slots = asyncio.Semaphore(PUTS_IN_FLIGHT)

        async def put(number: int) -> None:
            async with slots:
                await obstore.put_async(store, key(prefix, number), BODY)

        for start in range(0, count, 10_000):
            await asyncio.gather(*(put(n) for n in range(start, min(start + 10_000, count))))
            print(f"  {min(start + 10_000, count):,} objects", file=sys.stderr, flush=True)

    asyncio.run(put_all())
    obstore.put(store, marker, b"")
    return time.monotonic() - started


def write_manifest(path: Path, prefix: str, count: int) -> None:
    """A manifest of `count` images in key order (the header says so), 1 in 100 with another MD5."""
    same = base64.b64encode(hashlib.md5(BODY).digest()).decode()
    other = base64.b64encode(hashlib.md5(b"changed").digest()).decode()
    header = {"images_dir": "/nonexistent", "images_order": "object key", "total_images": count}
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(header)[:-1] + ', "images": [\n')
        for n in range(count):
            name = Path(key(prefix, n)).name
            entry = {
                "product_id": name[:-4],
                "file_path": f"/nonexistent/{name}",
                "file_size": len(BODY),
                "content_type": "image/jpeg",
                "relative_path": name,
                "file_name": name,
                "sha256": "0" * 64,
                "md5": other if n % 100 == 0 else same,
            }
            out.write(("" if n == 0 else ",\n") + json.dumps(entry))
        out.write("\n]}\n")


def measure_child(what: str, spec: dict) -> dict:
    """One measure in a fresh process: its answer, with its own peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "child", what, json.dumps(spec)], stdout=subprocess.PIPE, env=os.environ
    )
    if done.returncode:
        raise SystemExit(f"{what} failed (code {done.returncode})")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def child(what: str, spec: dict) -> dict:
    from include.catalog_publisher import env_clients
    from include.catalog_publisher.manifest import Shard, merge_manifests, write_manifest
    from include.catalog_publisher.s3_store import iter_objects
    from include.catalog_publisher.upload import plan_upload

    started = time.monotonic()
    if what == "manifest":
        shard = Shard(*spec["shard"]) if spec.get("shard") else None
        answer = {"images": write_manifest(spec["folder"], spec["output"], shard=shard).total_images}
        return {**answer, "seconds": time.monotonic() - started, "peak_rss": bench.own_peak_rss()}
    if what == "merge":
        answer = {"images": merge_manifests(spec["parts"], spec["output"]).total_images}
        return {**answer, "seconds": time.monotonic() - started, "peak_rss": bench.own_peak_rss()}
    target, store = env_clients.s3_store(spec["bucket"])
    if what == "plan":
        with tempfile.TemporaryDirectory(dir=spec["work"]) as work:
            _, unchanged, batches = plan_upload(
                store, target, spec["manifest"], Path(work), spec["prefix"], 2000, False
            )
            answer = {"unchanged": unchanged, "planned": sum(b.images for b in batches), "batches": len(batches)}
    else:
        held = {key: (size, etag) for key, size, etag in iter_objects(store, target, [spec["prefix"]])}
        answer = {"listed": len(held)}
    return {**answer, "seconds": time.monotonic() - started, "peak_rss": bench.own_peak_rss()}


def measure_manifests(files: int) -> dict:
    """One process building the whole manifest, against 2 shard processes at once and the merge after them."""
    folder = bench.make_images(bench.DATA / f"scale-files-{files}", files, kb=(2, 2))
    work = bench.DATA / "scale"
    one = measure_child("manifest", {"folder": str(folder), "output": str(work / "one.json")})
    parts = [str(work / f"shard-{i}.json") for i in range(2)]
    started = time.monotonic()
    shards = [
        subprocess.Popen(
            [sys.executable, __file__, "child", "manifest", json.dumps(spec)], stdout=subprocess.PIPE, env=os.environ
        )
        for spec in ({"folder": str(folder), "output": part, "shard": [i, 2]} for i, part in enumerate(parts))
    ]
    answers = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1]) for p in shards]
    if any(p.returncode for p in shards):
        raise SystemExit("a shard failed")
    merged = measure_child("merge", {"parts": parts, "output": str(work / "merged.json")})
    return {
        "files": files,
        "one_task": one,
        "shards": answers,
        "merge": merged,
        "sharded_s": time.monotonic() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1_000_000, help="files in the manifest measure (0: skip)")
    args = parser.parse_args()
    isolate_from_caller()
    stack = EmbeddedStack(ROOT / ".stack" / "bench-scale")  # kept: the prefix is built once
    state = stack.start()
    os.environ.update(state.env())
    try:
        from include.catalog_publisher import env_clients

        prefix = f"scale-{args.objects}"
        _, store = env_clients.s3_store(state.bucket)
        print(f"filling {prefix} (once)", file=sys.stderr)
        fill_s = fill_prefix(store, prefix, args.objects)
        work = bench.DATA / "scale"
        work.mkdir(parents=True, exist_ok=True)
        manifest = work / f"manifest-{args.objects}.json"
        if not manifest.exists():
            write_manifest(manifest, prefix, args.objects)
        spec = {"bucket": state.bucket, "prefix": prefix, "manifest": str(manifest), "work": str(work)}
        results = {
            "objects": args.objects,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "fill_s": fill_s,
            "plan": measure_child("plan", spec),
            "listing_in_a_dict": measure_child("dict", spec),
        }
        if args.files:
            results["manifest"] = measure_manifests(args.files)
    finally:
        stack.stop()
    bench.save_results("scale", results, render(results))
    return 0


def render(r: dict) -> str:
    plan, held = r["plan"], r["listing_in_a_dict"]
    mb = 1024 * 1024
    return "\n".join(
        [
            f"Planning at scale, {r['started']}, {os.cpu_count()} cores, embedded SeaweedFS: `bench/scale.py`",
            "",
            "| what | objects | time | peak RSS | target |",
            "|---|---|---|---|---|",
            f"| plan_upload (streaming merge: manifest beside the listing) | {r['objects']:,} | "
            f"{plan['seconds']:.1f}s | {plan['peak_rss'] / mb:.0f} MB | ≤ 150 MB |",
            f"| for reference: the listing held in a dict (planning before) | {held['listed']:,} | "
            f"{held['seconds']:.1f}s | {held['peak_rss'] / mb:.0f} MB | |",
            "",
            f"The plan found {plan['unchanged']:,} images unchanged and planned {plan['planned']:,} in "
            f"{plan['batches']} batches. Peak RSS is each process's own (VmHWM), Python and the libraries included.",
            "",
            *(render_manifests(r["manifest"]) if "manifest" in r else []),
        ]
    )


def render_manifests(m: dict) -> list[str]:
    one, shards, merge, mb = m["one_task"], m["shards"], m["merge"], 1024 * 1024
    return [
        f"The manifest of {m['files']:,} files (5-8 KB JPEGs, nothing known from a last manifest):",
        "",
        "| how | time | peak RSS |",
        "|---|---|---|",
        f"| one task | {one['seconds']:.1f}s | {one['peak_rss'] / mb:.0f} MB |",
        f"| 2 shards at once, then the merge (whole) | {m['sharded_s']:.1f}s "
        f"({m['sharded_s'] / one['seconds']:.2f}x the time) | "
        f"{max(s['peak_rss'] for s in shards) / mb:.0f} MB per shard, {merge['peak_rss'] / mb:.0f} MB merging |",
        f"| of which the shards / the merge | {max(s['seconds'] for s in shards):.1f}s / {merge['seconds']:.1f}s | |",
        "",
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        print(json.dumps(child(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        sys.exit(main())
