"""Writing artifacts so that readers never see a half-written file."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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
    """Write `data` as indented JSON, atomically."""
    with atomic_output(path) as out:
        json.dump(data, out, indent=2, ensure_ascii=False)
        out.write("\n")


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


def publish_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy a run's artifact to a well-known path (e.g. data/s3_url_mapping.json), atomically."""
    with open(source, "rb") as src, atomic_output(target, "wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
