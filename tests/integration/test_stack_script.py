"""scripts/stack.py run, as `make airflow-ui` uses it: the command gets the stack's credentials and places, keeps
the caller's UI port and publisher settings (named on stderr, as the ignored ones are), and SIGTERM stops the
command first, then the stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from devstack.embedded_stack import SECRET_KEY
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.settings import BUCKET

STACK = [sys.executable, str(project_root() / "scripts" / "stack.py")]


def caller_env(tmp_path, **settings: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **settings}


def test_run_keeps_the_ui_port_and_publisher_settings_and_ignores_credentials_and_places(tmp_path):
    names = ["AIRFLOW__API__PORT", "PUBLISHER_SCHEDULE", "PUBLISHER_BUCKET", "AWS_SECRET_ACCESS_KEY"]
    show = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
    env = caller_env(
        tmp_path,
        AIRFLOW__API__PORT="18080",
        PUBLISHER_SCHEDULE="@hourly",
        PUBLISHER_BUCKET="my-real-bucket",
        PUBLISHER_ALLOWED_OUTPUTS="s3://production-images/products",
        AWS_SECRET_ACCESS_KEY="real-secret",
    )
    done = subprocess.run(
        [*STACK, "--state-dir", str(tmp_path / "stack"), "run", "--", sys.executable, "-c", show],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "AIRFLOW__API__PORT": "18080",
        "PUBLISHER_SCHEDULE": "@hourly",
        "PUBLISHER_BUCKET": BUCKET.default,  # the stack's, where its S3 has the bucket
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    ignored = "AWS_SECRET_ACCESS_KEY, PUBLISHER_ALLOWED_OUTPUTS, PUBLISHER_BUCKET"
    assert f"stack.py: ignoring {ignored} from your shell" in done.stderr
    assert "stack.py: passing on AIRFLOW__API__PORT, PUBLISHER_SCHEDULE from your shell" in done.stderr
    assert "real-secret" not in done.stderr + done.stdout


def test_sigterm_stops_the_command_and_then_the_stack(tmp_path):
    pid_file = tmp_path / "command.pid"
    wait = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(600)"
    state = tmp_path / "stack"
    runner = subprocess.Popen(
        [*STACK, "--state-dir", str(state), "run", "--", sys.executable, "-c", wait],
        env=caller_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not pid_file.exists():
        assert runner.poll() is None and time.monotonic() < deadline, runner.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    services = json.loads((state / "stack.json").read_text())["pids"]

    runner.send_signal(signal.SIGTERM)
    assert runner.wait(60) == 128 + signal.SIGTERM  # the command's end by the signal passed on, as a shell says it
    command = int(pid_file.read_text())
    for pid in (command, *services.values()):
        assert not _alive(pid), pid
    assert not (state / "stack.json").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
