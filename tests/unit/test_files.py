"""Artifacts are replaced whole or not at all; large listings are sorted in bounded memory."""

from __future__ import annotations

import random

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import atomic_output, publish_copy, read_json, sorted_by_key, write_json


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "artifact.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_output(target) as out:
        out.write('{"version": 2, "half": ')
        raise RuntimeError("disk gone")
    assert read_json(target, "artifact") == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["artifact.json"]


def test_an_unwritable_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PublisherError, match="cannot write .*check the folder exists and is writable"):
        write_json(blocker / "sub" / "x.json", {})


def test_publish_copy_replaces_the_well_known_copy(tmp_path):
    write_json(tmp_path / "run.json", {"run": 2})
    (tmp_path / "latest.json").write_text("old")
    publish_copy(tmp_path / "run.json", tmp_path / "latest.json")
    assert read_json(tmp_path / "latest.json", "copy") == {"run": 2}


def test_read_json_names_the_file_and_what_it_is(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(PublisherError, match=r"S3 URL mapping .*bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json", "S3 URL mapping")


def test_artifacts_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    write_json(tmp_path / "a.json", {})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("run", [3, 1000])  # spilled to temporary files and merged / sorted in memory
def test_sorted_by_key_returns_every_record_once_in_key_order(run):
    keys = [f"p/{n:03d}.jpg" for n in range(50)] + ["p/été.jpg", "p/Z.png", "p/a b.webp", "q/0.jpg"]
    records = [(key, f'{{"key": "{key}"}}'.encode()) for key in keys]
    random.Random(7).shuffle(records)
    assert list(sorted_by_key(records, run=run)) == sorted(records)
