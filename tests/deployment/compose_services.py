"""The compose file's Airflow services as compose runs them, without a Docker engine.

Each service (and each replica of a scaled one) runs as its own process with exactly the command and environment
Compose v2 rendered from the file and the user's .env, on top of what the image gives every container: the
official image's and the project Dockerfile's ENV, its WORKDIR and its entrypoint (image_entrypoint.sh stands in
for it). What a container has of its own is its own here: a root folder whose /opt/airflow and /home/airflow are
private (only the file's bind mounts are shared, as symlinks to their sources), its host name (a UTS namespace, as
Docker gives each container). The services run as the tests' user, not the file's `user:`: the Python they run
is this machine's, which may live where no other user can read (root's own home).

What differs from Docker, and only that: the compose services' host names (postgres, redis, s3, ...) become
127.0.0.1 and their ports free loopback ports, in every value and in the ports the Airflow services listen on;
container paths become the private folders.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from devstack.airflow_services import Airflow
from devstack.embedded_stack import free_port

ENTRYPOINT = Path(__file__).with_name("image_entrypoint.sh")
# apache/airflow's own ENV that compose's environment lands on (the project Dockerfile's ENV lines are read from it).
BASE_IMAGE_ENV = {"AIRFLOW_HOME": "/opt/airflow", "AIRFLOW_USER_HOME_DIR": "/home/airflow", "HOME": "/home/airflow"}
WORKDIR = "/opt/airflow"
CONTAINER_DIRS = ("/opt/airflow", "/home/airflow")
# The port each Airflow service listens on in its container, moved to a free port: here they share one host.
LISTEN_PORT_SETTINGS = {
    "airflow-apiserver": "AIRFLOW__API__PORT",
    "airflow-scheduler": "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    "airflow-triggerer": "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "airflow-worker": "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
}
HOST_NAMES = ("postgres", "redis", "airflow-apiserver", "s3", "kafka", "elasticsearch")


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    """The KEY=VALUE pairs of a Dockerfile's ENV instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            pairs.update(item.split("=", 1) for item in line[4:].split())
    return pairs


class ComposeHost:
    """One machine standing in for compose's network: service addresses mapped to loopback ports."""

    def __init__(self, root: Path, project: Path, addresses: dict[tuple[str, int], int]) -> None:
        """addresses: (compose host name, port in its container) -> the loopback port of its stand-in."""
        self.root, self.project, self.addresses = root, project, addresses
        self.replacements: dict[str, str] = {}
        for (host, port), local in addresses.items():
            for separator in (":", "%3A"):  # connection URIs carry host:port URL-encoded in their query
                self.replacements[f"{host}{separator}{port}"] = f"127.0.0.1{separator}{local}"
            if port == 5432:
                self.replacements[f"@{host}/"] = f"@127.0.0.1:{local}/"  # a PostgreSQL URL without its port

    def addressed(self, value: str) -> str:
        for name, local in self.replacements.items():
            value = value.replace(name, local)
        left = re.findall(rf"\b({'|'.join(HOST_NAMES)})(?::|%3A)\d+|@postgres/", value)
        assert not left, f"a compose address this host does not map: {left} in {value!r}"
        return value


class Container:
    """One service replica: its private folders, environment and command line."""

    def __init__(self, host: ComposeHost, service_name: str, service: dict, hostname: str) -> None:
        self.host, self.service_name, self.service, self.hostname = host, service_name, service, hostname
        self.root = host.root / "containers" / hostname
        self.paths = {inside: str(self.root / inside.lstrip("/")) for inside in CONTAINER_DIRS}
        self.paths["/entrypoint"] = str(ENTRYPOINT)
        for inside in CONTAINER_DIRS:
            Path(self.paths[inside]).mkdir(parents=True)
        for mount in service.get("volumes", []):
            if mount["type"] == "bind":
                target = Path(self.inside_path(mount["target"]))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(mount["source"])

    def inside_path(self, value: str) -> str:
        for inside, outside in self.paths.items():
            value = value.replace(inside, outside)
        return value

    def translated(self, value: str) -> str:
        return self.host.addressed(self.inside_path(value))

    def environment(self) -> dict[str, str]:
        env = {
            **BASE_IMAGE_ENV,
            **dockerfile_env(self.host.project / "Dockerfile"),
            **{k: str(v) for k, v in (self.service.get("environment") or {}).items() if v is not None},
        }
        env = {key: self.translated(value) for key, value in env.items()}
        env["HOSTNAME"] = self.hostname  # Docker sets it in every container
        env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # the image's Python: this virtualenv's
        setting = LISTEN_PORT_SETTINGS.get(self.service_name)
        if setting:  # the api-server on the port the others were given for it
            env[setting] = str(self.host.addresses.get((self.service_name, 8080)) or free_port())
        return env

    def argv(self) -> list[str]:
        """The container's command line: the file's entrypoint or the image's, then its command, in a UTS
        namespace with the container's host name."""
        entrypoint = self.service.get("entrypoint") or ["/entrypoint"]
        command = [self.translated(arg.replace("$$", "$")) for arg in [*entrypoint, *self.service.get("command", [])]]
        if command[0] == "/entrypoint" or command[0] == str(ENTRYPOINT):
            command = ["/bin/bash", str(ENTRYPOINT), *command[1:]]
        namespace = ["unshare", "--uts"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--uts"]
        return [*namespace, "--", "/bin/sh", "-c", 'hostname "$0" && exec "$@"', self.hostname, *command]

    def start(self, airflow: Airflow) -> subprocess.Popen:
        return airflow.spawn_command(
            self.hostname, self.argv(), self.environment(), cwd=Path(self.inside_path(WORKDIR))
        )

    def run(self, timeout: float) -> subprocess.CompletedProcess:
        """A one-off service (airflow-init): run to its end, as `service_completed_successfully` waits."""
        return subprocess.run(
            self.argv(),
            env=self.environment(),
            cwd=self.inside_path(WORKDIR),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def copy_project(source: Path, project: Path) -> None:
    """The files a compose user has beside the compose file (the mounts' sources and the Dockerfile)."""
    project.mkdir(parents=True)
    for name in ("docker-compose.yaml", "Dockerfile", ".env.example"):
        shutil.copy(source / name, project / name)
    for name in ("dags", "include", "plugins"):
        shutil.copytree(source / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
