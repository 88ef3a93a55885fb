"""Where a DAG run may read its inputs: the images folder and the catalog come from allowed places only.

Anyone who may trigger a run chooses `images_dir` and `catalog_file`; without a limit they could
publish any JSON file the worker can read, or any object the AWS connection can read, to Kafka.
So a run reads only below the allowed inputs:

  PUBLISHER_ALLOWED_INPUTS   comma-separated folders (relative ones start at the project home) and
                             s3://bucket or s3://bucket/prefix locations; default: `data`, the project
                             home's data/ folder (the demo's, and the compose stack's ./data mount)

plus, always, the run artifacts' own location ($PUBLISHER_ARTIFACTS_URL: its bucket; else data/runs),
where the publisher writes the catalog the indexer verifies (the compose stack's catalog can be put in
that bucket too). Paths are compared after resolving symlinks and `..`, so neither leads out.
The runbook's commands are not limited: whoever runs them chooses their files already.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from include.catalog_publisher import settings
from include.catalog_publisher.defaults import resolve
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.run_artifacts import artifacts_location

_S3 = re.compile(r"s3://([^/]+)/*(.*?)/*")
_KINDS = "a list of folders and s3://bucket[/prefix] locations"


def allowed_inputs() -> tuple[list[Path], list[tuple[str, str]]]:
    """(folders, (bucket, key prefix) pairs) a run may read from, from the setting and the artifact location."""
    setting = settings.value(settings.ALLOWED_INPUTS)
    entries = [e.strip() for e in setting.split(",") if e.strip()]
    entries.append(artifacts_location())
    folders: list[Path] = []
    buckets: list[tuple[str, str]] = []
    for entry in entries:
        if entry.startswith("s3://"):
            match = _S3.fullmatch(entry)
            if not match:
                raise settings.invalid(settings.ALLOWED_INPUTS, setting, f"{_KINDS} ({entry!r} is not)")
            prefix = match.group(2) if entry != artifacts_location() else ""  # the artifacts' whole bucket
            buckets.append((match.group(1), prefix))
        elif "://" in entry:
            raise settings.invalid(settings.ALLOWED_INPUTS, setting, f"{_KINDS} ({entry!r} is neither)")
        else:
            folders.append(Path(os.path.realpath(resolve(entry))))
    return folders, buckets


def _listed() -> str:
    folders, buckets = allowed_inputs()
    return ", ".join([str(f) for f in folders] + [f"s3://{b}/{p}".rstrip("/") for b, p in buckets])


def _refuse(param: str, value: str) -> PublisherError:
    return PublisherError(
        f"{param} {value!r} is outside the allowed inputs ({_listed()}); use a location under one of them, or have "
        f"an administrator add its folder or s3://bucket to {settings.ALLOWED_INPUTS.name} in the workers' environment"
    )


def confine_images(value: str, param: str) -> str:
    """confine for images_dir: a folder the workers read, or an s3://bucket/prefix location (below an allowed
    s3://bucket[/prefix]). Either comes back as it is read: a path resolved, a location without trailing slashes."""
    if not value.startswith("s3://"):
        return confine(value, param)
    from include.catalog_publisher.bucket_images import BucketLocation

    location = BucketLocation.parse(value)
    for allowed_bucket, prefix in allowed_inputs()[1]:
        inside = not prefix or location.prefix == prefix or location.prefix.startswith(prefix + "/")
        if location.bucket == allowed_bucket and inside:
            return location.url
    raise _refuse(param, value)


def confine(value: str, param: str) -> str:
    """`value` (a path or an s3:// URL given as the param named `param`) when a run may read it; else
    PublisherError naming the param, the allowed inputs and the setting. A path comes back resolved."""
    if value.startswith("s3://"):
        match = re.fullmatch(r"s3://([^/]+)/(.+)", value)
        if not match or "/../" in f"/{match.group(2)}/" or "/./" in f"/{match.group(2)}/":
            problem = f"{param} {value!r} is not an s3://bucket/key URL of one object"
            raise PublisherError(f"{problem}; pass s3://bucket/path/to/file")
        bucket, key = match.groups()
        for allowed_bucket, prefix in allowed_inputs()[1]:
            if bucket == allowed_bucket and (not prefix or key.startswith(prefix + "/")):
                return value
        raise _refuse(param, value)
    if "://" in value:
        raise PublisherError(f"{param} {value!r} is neither a path nor an s3://bucket/key URL")
    real = Path(os.path.realpath(resolve(value)))
    for folder in allowed_inputs()[0]:
        if real == folder or real.is_relative_to(folder):
            return str(resolve(value))
    raise _refuse(param, value)
