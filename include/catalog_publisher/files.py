"""Files the steps write and read: written atomically (a reader never sees a half-written one), JSON read with
one error naming the file, hashed, copied in place, and records sorted beyond memory (sorted_by_key)."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import heapq
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import msgspec

from include.catalog_publisher.errors import PublisherError


@functools.cache
def _umask() -> int:
    """The process umask, read once (reading it means setting it, which is not thread-safe)."""
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path`; on success fsync and rename it over `path`.

    On any error (including a full disk) the temporary file is removed and the previous
    `path`, if any, is left exactly as it was.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise PublisherError(f"cannot write {target}: {exc.strerror}; check the folder exists and is writable") from exc
    encoding = None if "b" in mode else "utf-8"
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; an artifact gets the mode open() would give it
        with open(fd, mode, encoding=encoding) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            previous = (
                f"the previous {target.name} is untouched" if target.exists() else f"no {target.name} was written"
            )
            raise PublisherError(
                f"cannot write {target}: {exc.strerror}; free space on that disk and run again ({previous})"
            ) from None
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically: what json.dump(indent=2, ensure_ascii=False) writes, encoded
    by msgspec (a URL mapping of 100,000 images: several times faster)."""
    with atomic_output(path, "wb") as out:
        out.write(msgspec.json.format(msgspec.json.encode(data), indent=2))
        out.write(b"\n")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Load a small JSON artifact, or fail with a message naming the file and what it should be."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PublisherError(f"{what} {p} does not exist; create it with the previous step first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PublisherError(f"{what} {p} is not valid JSON ({exc}); regenerate it with the previous step") from None


def files_sha256(*paths: str | os.PathLike, prefix: bytes = b"") -> str:
    """The SHA-256 of `prefix` then the files' bytes, a NUL between two files (one file alone: its own SHA-256)."""
    digest = hashlib.sha256(prefix)
    for number, path in enumerate(paths):
        digest.update(b"\0" if number else b"")
        with open(path, "rb") as f:
            hashlib.file_digest(f, lambda: digest)
    return digest.hexdigest()


def publish_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a run's artifact to a well-known path (e.g. data/s3_url_mapping.json), atomically."""
    with open(source, "rb") as src, atomic_output(target, "wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)


_RUN_RECORD = struct.Struct("<II")  # a spilled record: the key's and the line's lengths, then both
SORT_RUN = 50_000  # records sorted in memory at a time: a run of manifest lines is ~20 MB


def sorted_by_key(records: Iterable[tuple[str, bytes]], run: int = SORT_RUN) -> Iterator[tuple[str, bytes]]:
    """(key, line) records in key order with bounded memory, however many: runs of `run` records are sorted in
    memory and spilled to temporary files, which are then merged (an external merge sort); fewer than `run`
    records never touch the disk."""
    buffer: list[tuple[str, bytes]] = []
    with contextlib.ExitStack() as spills:
        runs: list[IO[bytes]] = []
        for record in records:
            buffer.append(record)
            if len(buffer) >= run:
                runs.append(_spill(sorted(buffer, key=itemgetter(0)), spills))
                buffer = []
        buffer.sort(key=itemgetter(0))
        if not runs:
            yield from buffer
            return
        yield from heapq.merge(*map(_read_spill, runs), iter(buffer), key=itemgetter(0))


def _spill(records: list[tuple[str, bytes]], spills: contextlib.ExitStack) -> IO[bytes]:
    f = spills.enter_context(tempfile.TemporaryFile("w+b"))  # noqa: SIM115 (closed with the merge)
    for key, line in records:
        encoded = key.encode("utf-8", "surrogatepass")
        f.write(_RUN_RECORD.pack(len(encoded), len(line)) + encoded + line)
    f.seek(0)
    return f


def _read_spill(f: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    while header := f.read(_RUN_RECORD.size):
        key_size, line_size = _RUN_RECORD.unpack(header)
        yield f.read(key_size).decode("utf-8", "surrogatepass"), f.read(line_size)
