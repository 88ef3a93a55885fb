"""PostgreSQL and Redis from Debian's packages (`make test` installs them when missing), each started
on a free loopback port in a throwaway folder for one test module or benchmark, and stopped after it."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from devstack.embedded_stack import free_port, wait_ready

MISSING = (
    "{what} is not installed; `make test` installs it (apt-get install postgresql redis-server), or install it yourself"
)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user the package created."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres(database: str = "airflow") -> Iterator[str]:
    """A PostgreSQL cluster with `database`, trust auth on 127.0.0.1; yields its SQLAlchemy URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    assert found, MISSING.format(what="PostgreSQL")
    bin_dir = Path(found[-1]).parent
    # Outside pytest's 0700 tmp tree, so the postgres user can reach it.
    root = Path(tempfile.mkdtemp(prefix="catalog-publisher-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()

    def run(*cmd):
        return subprocess.run(
            _as_postgres([str(bin_dir / cmd[0]), *cmd[1:]]), capture_output=True, text=True, timeout=120
        )

    done = run("initdb", "-D", f"{root}/data", "-U", "airflow", "--auth=trust", "-E", "UTF8")
    assert done.returncode == 0, done.stderr
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    done = run("pg_ctl", "-D", f"{root}/data", "-o", options, "-l", f"{root}/postgres.log", "-w", "start")
    assert done.returncode == 0, done.stderr + (root / "postgres.log").read_text()
    try:
        done = run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "airflow",
            "-d",
            "postgres",
            "-c",
            f"CREATE DATABASE {database}",
        )
        assert done.returncode == 0, done.stderr
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/{database}"
    finally:
        run("pg_ctl", "-D", f"{root}/data", "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """A Redis server on 127.0.0.1 without persistence; yields its URL."""
    server = shutil.which("redis-server")
    assert server, MISSING.format(what="Redis")
    root = Path(tempfile.mkdtemp(prefix="catalog-publisher-redis-"))
    port = free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)]
    with open(root / "redis.log", "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready("Redis", lambda: _accepts(port), process, root / "redis.log", 30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)
