"""Where one DAG run keeps its artifacts, so concurrent runs, backfills and workers never share a file.

The artifact location is a local folder (the default, data/runs) or an `s3://bucket/prefix` URL
($PUBLISHER_ARTIFACTS_URL), reached through the AWS connection ($PUBLISHER_ARTIFACTS_CONN_ID,
default aws_default). Steps always read and write local files, streamed; with an s3:// location
each task works in a local folder of its worker (data/work/<dag>/<run>/) and the run's files are
uploaded when written and downloaded when read, so mapped tasks on different workers share nothing
but the images source.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from include.catalog_publisher import settings
from include.catalog_publisher.defaults import project_home, resolve
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import atomic_output, publish_copy

log = logging.getLogger(__name__)

WORK_DIR = "data/work"


def artifacts_location() -> str:
    """The configured artifact location: $PUBLISHER_ARTIFACTS_URL, else data/runs under the project home."""
    return settings.value(settings.ARTIFACTS_URL)


def latest_name(dag_id: str, reference_path: str) -> str:
    """Where the latest copy of an artifact is kept under an object-storage location."""
    return f"{dag_id}/latest/{Path(reference_path).name}"


def latest_copy(dag_id: str, reference_path: str) -> str:
    """Where publish_latest leaves an artifact's latest copy: the runbook path under data/ (local location) or its
    URL under the object-storage location. The indexer's form defaults to the catalog's, so a manual run verifies
    what the last publish wrote wherever the deployment keeps it."""
    location = artifacts_location()
    if not location.startswith("s3://"):
        return reference_path
    return ObjectFolder(location).url(latest_name(dag_id, reference_path))


def run_folder(dag_id: str, run_id: str) -> str:
    """<dag>/<run>: the run id made safe as one path segment (run ids carry ':' and '+'), then a short hash of the
    raw id, so distinct ids never share a folder (`...T00:00:00+00:00` and `...T00_00_00_00_00` read alike once
    made safe). An id with no letter or digit (`.`, `..`: Airflow's run-id pattern takes them) names no folder of
    its own, and is refused."""
    safe = _safe(run_id)
    if safe is None:
        raise PublisherError(
            f"run id {run_id!r} cannot name a folder of its own for the run's artifacts; trigger the run again with "
            "a run id that has letters or digits (or leave the run id empty: Airflow makes one)"
        )
    digest = hashlib.blake2b(run_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{dag_id}/{safe[:200]}-{digest}"  # with the hash, within a file name's 255 bytes


def legacy_run_folder(dag_id: str, run_id: str) -> str | None:
    """The folder a run got before run folders carried a hash (<dag>/<run id made safe>), for reading the artifacts
    of runs made then (their run reports); None for an id that named no folder of its own."""
    safe = _safe(run_id)
    return f"{dag_id}/{safe}" if safe is not None else None


def _safe(run_id: str) -> str | None:
    """The run id made safe as one path segment; None when no letter or digit is left to name a folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)
    return safe if re.search(r"[A-Za-z0-9]", safe) else None


class ObjectFolder:
    """A prefix of an S3 bucket holding files, read and written whole through the AWS connection."""

    def __init__(self, url: str, aws_conn_id: str | None = None) -> None:
        match = re.fullmatch(r"s3://([^/]+)/*(.*?)/*", url)
        if not match:
            raise PublisherError(f"artifact location {url!r} is not an s3://bucket/prefix URL")
        self.bucket, self.prefix = match.group(1), match.group(2)
        self.aws_conn_id = aws_conn_id or settings.value(settings.ARTIFACTS_CONN_ID)
        self._store = None

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    @property
    def store(self):
        if self._store is None:
            from include.catalog_publisher import airflow_clients

            self.target, self._store = airflow_clients.s3_store(self.bucket, self.aws_conn_id)
        return self._store

    def upload(self, local: Path, name: str) -> str:
        """Put a local file under name (one atomic PUT, multipart for large files); return its URL."""
        import obstore
        from obstore.exceptions import BaseError

        try:
            obstore.put(self.store, self.key(name), local)
        except (BaseError, FileNotFoundError) as exc:  # a 404 (missing bucket) comes as the builtin
            raise self.error(exc, f"cannot store artifact {self.url(name)}") from None
        return self.url(name)

    def download(self, name: str, local: Path, *, missing_ok: bool = False, missing: str = "") -> Path | None:
        """Stream the object into local (atomically); None when it is missing and missing_ok. `missing`
        is the message when it is missing (default: an artifact of this run that is not written yet)."""
        import obstore
        from obstore.exceptions import BaseError, NotFoundError

        from include.catalog_publisher.s3_errors import CONFIG, classify

        try:
            result = obstore.get(self.store, self.key(name))
            with atomic_output(local, "wb") as out:
                for chunk in result.stream(min_chunk_size=8 * 1024 * 1024):
                    out.write(chunk)
        except (NotFoundError, FileNotFoundError) as exc:  # obstore raises the builtin for a 404 on GET
            if classify(exc).kind == CONFIG:  # the bucket itself is missing
                raise self.error(exc, f"cannot read artifact {self.url(name)}") from None
            if missing_ok:
                return None
            missing = missing or f"artifact {self.url(name)} does not exist; the step that writes it has not run yet"
            raise PublisherError(missing) from None
        except BaseError as exc:
            raise self.error(exc, f"cannot read artifact {self.url(name)}") from None
        return local

    def exists(self, name: str) -> bool:
        """Whether the object is there (one HEAD)."""
        import obstore
        from obstore.exceptions import BaseError, NotFoundError

        from include.catalog_publisher.s3_errors import CONFIG, classify

        try:
            obstore.head(self.store, self.key(name))
        except (NotFoundError, FileNotFoundError) as exc:
            if classify(exc).kind == CONFIG:
                raise self.error(exc, f"cannot look for artifact {self.url(name)}") from None
            return False
        except BaseError as exc:
            raise self.error(exc, f"cannot look for artifact {self.url(name)}") from None
        return True

    def error(self, exc: BaseException, what: str) -> PublisherError:
        """Service trouble (5xx, SlowDown, no answer) after the client's retries: ServiceUnavailableError, so
        Airflow retries the task; anything else (missing bucket, refused credentials, denied): fails at once."""
        from include.catalog_publisher.s3_errors import as_error

        return as_error(exc, self.target.where, what)


class RunArtifacts:
    """One run's manifest, batches, results, mapping and catalog, under <location>/<dag>/<run>/.

    The properties are local paths the steps read and write; `save` makes a written file the run's
    artifact and returns where it is kept (for XCom), `fetch` gives back a local copy of one.
    """

    def __init__(self, dag_id: str, run_id: str, location: str | None = None, *, dry_run: bool = False) -> None:
        location = location or artifacts_location()
        self.dag_id, self.run_id = dag_id, run_id
        self.dry_run = dry_run  # a dry run keeps its own artifacts, and changes no latest copy and nothing else
        self.relative = run_folder(dag_id, run_id)
        # With object storage, the run's objects are <location>/<relative>/<name>; the steps work in `dir`.
        self.remote: ObjectFolder | None = ObjectFolder(location) if location.startswith("s3://") else None
        self.dir = (project_home() / WORK_DIR if self.remote else resolve(location)) / self.relative

    @property
    def manifest(self) -> Path:
        return self.dir / "s3_upload_manifest.json"

    def manifest_part(self, shard) -> Path:
        """One shard's manifest (a build_manifest task's), merged into `manifest` by plan_batches."""
        return self.dir / "manifest-shards" / f"shard-{shard.index + 1:03d}-of-{shard.count:03d}.json"

    @property
    def batches_dir(self) -> Path:
        return self.dir / "batches"

    @property
    def unchanged(self) -> Path:
        """Skipped results of the images the bucket already holds unchanged (written when planning)."""
        return self.dir / "results" / "unchanged.json"

    def results(self, batch: int) -> Path:
        return self.dir / "results" / f"batch-{batch:05d}.json"

    @property
    def url_mapping(self) -> Path:
        return self.dir / "s3_url_mapping.json"

    @property
    def catalog(self) -> Path:
        return self.dir / "products_with_s3_urls.json"

    @property
    def catalog_ids(self) -> Path:
        """Every product id of the catalog, one per line (what tombstones are computed against)."""
        return self.dir / "catalog_ids.txt"

    @property
    def catalog_images(self) -> Path:
        """A dated run's images of the whole catalog: the uploaded images record with this run's taken
        (uploaded_images.py), the URL mapping its catalog was rewritten with."""
        return self.dir / "catalog_images.json"

    def published_state(self, topic: str) -> Path:
        """What the topic holds after this run's publish (published_state.py)."""
        return self.dir / published_state_name(topic)

    def _name(self, local: Path) -> str:
        """The object name of a file under `dir`: <dag>/<run>/<path in the run's folder>."""
        return f"{self.relative}/{Path(local).relative_to(self.dir).as_posix()}"

    def location(self, local: Path) -> str:
        """Where the artifact written at `local` is kept: that path, or its URL."""
        return str(local) if self.remote is None else self.remote.url(self._name(local))

    def save(self, local: Path) -> str:
        """Keep a file written under this run's folder as its artifact; return where it is kept."""
        if self.remote is None:
            return str(local)
        return self.remote.upload(local, self._name(local))

    def has(self, local: Path) -> bool:
        """Whether the artifact written at `local` was saved for this run (by any task, on any worker)."""
        return local.exists() if self.remote is None else self.remote.exists(self._name(local))

    def fetch(self, location: str | Path, *, missing_ok: bool = False) -> Path | None:
        """A local copy of an artifact given where it is kept (a path, or a URL that save returned)."""
        text = str(location)
        if self.remote is None or not text.startswith("s3://"):
            path = Path(text)
            return path if path.exists() or not missing_ok else None
        base = self.remote.url(f"{self.relative}/")
        if not text.startswith(base):
            return fetch_artifact(text, self.dir / "inputs")
        name = text[len(base) :]
        return self.remote.download(f"{self.relative}/{name}", self.dir / name, missing_ok=missing_ok)

    def publish_latest(self, local: Path, reference_path: str) -> str:
        """The latest copy of an artifact for people and scripts: the runbook path under data/ (local
        location), or <location>/<dag>/latest/<file> (object storage). A dry run leaves them as they are."""
        if self.dry_run:
            log.info("dry run: the latest %s is left as it is", Path(reference_path).name)
            return str(local)
        if self.remote is None:
            target = project_home() / reference_path
            publish_copy(local, target)
            return str(target)
        return self.remote.upload(local, latest_name(self.dag_id, reference_path))

    def fetch_latest(self, reference_path: str) -> Path | None:
        """A local copy of the latest copy publish_latest made (None when there is none yet)."""
        if self.remote is None:
            target = project_home() / reference_path
            return target if target.is_file() else None
        name = latest_name(self.dag_id, reference_path)
        return self.remote.download(name, self.dir / name, missing_ok=True)


def published_state_name(topic: str) -> str:
    """The published state's file name; its latest copy is data/<name> (or .../<dag>/latest/<name>)."""
    return f"published-{topic}.json"


def fetch_artifact(location: str, into: Path) -> Path:
    """A local path for a file given as a path or an s3:// URL (downloaded into `into`)."""
    if not location.startswith("s3://"):
        return resolve(location)
    folder_url, _, name = location.rpartition("/")
    missing = f"{location} does not exist; check the bucket and key"
    return ObjectFolder(folder_url).download(name, into / name, missing=missing)
