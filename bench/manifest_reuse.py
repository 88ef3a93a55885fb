"""The manifest step on a folder that did not change: reading every file against reusing the last manifest.

    .venv/bin/python bench/manifest_reuse.py [--images 10000] [--kb 30] [--repeats 3]

Writes N files of about K KB (random bytes behind a JPEG signature) into a temporary folder, then times
`write_manifest` (what `build_manifest` runs) alternately without and with the last manifest's entries
(`previous_entries`, read from the file as the task does; its reading is inside the clock). The page cache
is warm in both (the files were just written), which favours the full read: on a cold disk the gap is wider.
Prints the median of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

JPEG_SIGNATURE = b"\xff\xd8\xff\xe0"


def main() -> None:
    from include.catalog_publisher.manifest import previous_entries, write_manifest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--kb", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="manifest-bench-") as scratch:
        images = Path(scratch) / "images"
        images.mkdir()
        for i in range(args.images):
            (images / f"PROD-{i:07d}.jpg").write_bytes(JPEG_SIGNATURE + os.urandom(args.kb * 1024))
        last = Path(scratch) / "last.json"
        write_manifest(images, last)
        full, reused = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            write_manifest(images, Path(scratch) / "full.json")
            full.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_manifest(images, Path(scratch) / "reused.json", known=previous_entries(last, images))
            reused.append(time.perf_counter() - started)
    f, r = statistics.median(full), statistics.median(reused)
    print(f"{args.images} files of {args.kb} KB, median of {args.repeats}: read all {f:.2f} s, reuse {r:.2f} s")
    print(f"reuse / read all = {r / f:.2f}")


if __name__ == "__main__":
    main()
