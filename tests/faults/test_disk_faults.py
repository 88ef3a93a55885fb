"""A full disk, produced for real: a 1 MB tmpfs mounted in a private mount namespace (unshare), so
no privilege is needed and nothing is left mounted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

WRITE_ON_A_FULL_DISK = """
import json, os, sys
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import write_json
folder = sys.argv[1]
target = os.path.join(folder, "s3_url_mapping.json")
write_json(target, {"product_to_s3_url": {"PROD-1": "https://b/PROD-1.jpg"}})
try:
    write_json(target, {"product_to_s3_url": {f"PROD-{i}": "https://b/" + "x" * 100 for i in range(20000)}})
    error = None
except PublisherError as exc:
    error = str(exc)
print(json.dumps({"error": error, "content": open(target).read(), "files": sorted(os.listdir(folder))}))
"""


@pytest.mark.fault(
    "no space left on the disk while writing an artifact",
    "one error naming the file and the fix; the previous artifact intact, no temporary file left",
)
def test_a_full_disk_keeps_the_previous_artifact_intact(tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mount_then_run = 'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" -c "$3" "$1"'
    done = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            mount_then_run,
            "sh",
            str(disk),
            sys.executable,
            WRITE_ON_A_FULL_DISK,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["error"].startswith(
        f"cannot write {disk}/s3_url_mapping.json: No space left on device; free space on that disk"
    )
    assert "the previous s3_url_mapping.json is untouched" in outcome["error"]
    assert json.loads(outcome["content"]) == {"product_to_s3_url": {"PROD-1": "https://b/PROD-1.jpg"}}
    assert outcome["files"] == ["s3_url_mapping.json"]
    assert list(disk.iterdir()) == []  # the tmpfs lived in the child's namespace only
