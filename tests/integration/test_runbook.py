"""The runbook's commands, exactly as written, as subprocesses against the embedded stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from devstack import sample_data
from include.catalog_publisher import env_clients
from include.catalog_publisher.defaults import project_root
from tests.helpers import IMAGE_FORMATS, read_messages, read_topic, s3_client, unused_port, write_image

SCRIPTS = project_root() / "scripts"


def run(workdir, command: str, env=None, timeout=120) -> subprocess.CompletedProcess:
    """`python scripts/...` from the runbook, run from workdir (which holds data/) with the stack's environment."""
    argv = command.split()
    assert argv[0] == "python" and argv[1].startswith("scripts/")
    argv = [sys.executable, str(SCRIPTS / argv[1].removeprefix("scripts/")), *argv[2:]]
    return subprocess.run(
        argv, cwd=workdir, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one error line a failed command prints last."""
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr
    return last


@pytest.fixture(scope="module")
def workdir(stack, tmp_path_factory):
    """A new user's folder: sample data plus nested folders, several formats, odd names and non-images."""
    root = tmp_path_factory.mktemp("runbook")
    sample_data.generate(root / "data", count=30, min_kb=2, max_kb=20)
    images = root / "data" / "images"
    for i, fmt in enumerate(IMAGE_FORMATS):
        write_image(images / "summer sale" / "été" / f"PROD-ODD-{i}.{fmt.lower()}", fmt, seed=i)
    write_image(images / "PROD with spaces & ümlauts.png", "PNG")
    (images / "README.txt").write_text("not an image")
    (images / "PROD-TEXT.jpg").write_text("a text file named like an image")
    write_image(images / ".hidden.jpg")
    return root


@pytest.fixture(scope="module")
def bucket(stack):
    name = f"runbook-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=name)
    return name


def test_the_runbook_in_order(stack, workdir, bucket):
    data = workdir / "data"

    done = run(
        workdir,
        "python scripts/s3/prepare_s3_upload.py --images-dir data/images --output-file data/s3_upload_manifest.json",
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((data / "s3_upload_manifest.json").read_text())
    assert (
        manifest["total_images"] == 29 + 5 + 1 + 1
    )  # 30 products minus one without image, plus 1 orphan, 5 nested, 1 odd name
    assert {s["file_path"].rsplit("/", 1)[1] for s in manifest["skipped"]} == {
        "README.txt",
        "PROD-TEXT.jpg",
        ".hidden.jpg",
    }
    assert all(i["file_path"].startswith("data/images/") for i in manifest["images"])  # paths as the user gave them

    done = run(
        workdir,
        "python scripts/s3/upload_to_s3.py --manifest-file data/s3_upload_manifest.json "
        f"--bucket-name {bucket} --prefix products",
    )
    assert done.returncode == 0, done.stderr
    mapping = json.loads((data / "s3_url_mapping.json").read_text())
    assert (mapping["total_images"], mapping["uploaded_images"], mapping["failed_images"]) == (
        manifest["total_images"],
        manifest["total_images"],
        0,
    )
    s3 = s3_client(stack)
    for image in manifest["images"]:
        obj = s3.get_object(Bucket=bucket, Key=f"products/{image['file_name']}")
        assert obj["Body"].read() == (workdir / image["file_path"]).read_bytes()
        assert obj["ContentType"] == image["content_type"]
    odd = mapping["product_to_s3_url"]["PROD with spaces & ümlauts"]
    assert odd == f"{stack.s3_endpoint}/{bucket}/products/PROD%20with%20spaces%20%26%20%C3%BCmlauts.png"

    done = run(
        workdir,
        "python scripts/s3/update_catalog_with_s3_urls.py --catalog-file data/products.json "
        "--s3-url-mapping-file data/s3_url_mapping.json --output-file data/products_with_s3_urls.json",
    )
    assert done.returncode == 0, done.stderr
    catalog = json.loads((data / "products_with_s3_urls.json").read_text())
    source = json.loads((data / "products.json").read_text())
    assert [{k: v for k, v in p.items() if k != "image_url"} for p in catalog] == [
        {k: v for k, v in p.items() if k != "image_url"} for p in source
    ]
    urls = mapping["product_to_s3_url"]
    assert sum(1 for p in catalog if p["product_id"] in urls and p["image_url"] == urls[p["product_id"]]) == 29

    done = run(workdir, "python scripts/kafka/product_producer.py --products-file data/products_with_s3_urls.json")
    assert done.returncode == 0, done.stderr
    assert {
        k: v for k, v in read_topic(stack.kafka_bootstrap, "products") if k in {p["product_id"] for p in catalog}
    } == {p["product_id"]: p for p in catalog}

    done = run(workdir, "python scripts/kafka/product_consumer.py --once")
    assert done.returncode == 0, done.stderr
    es = env_clients.elasticsearch(stack.elasticsearch_url)
    es.indices.refresh(index="products")
    for product in catalog:
        assert es.get(index="products", id=product["product_id"])["_source"] == product


def test_the_consumer_runs_until_stopped_and_indexes_what_arrives(stack, workdir):
    data = workdir / "data"
    consumer = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "kafka" / "product_consumer.py")],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        changed = json.loads((data / "products.json").read_text())[:3]
        for product in changed:
            product["name"] = f"Renamed {product['product_id']}"
        (data / "changed.json").write_text(json.dumps(changed))
        assert (
            run(workdir, "python scripts/kafka/product_producer.py --products-file data/changed.json").returncode == 0
        )

        es = env_clients.elasticsearch(stack.elasticsearch_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            es.indices.refresh(index="products")
            if all(es.get(index="products", id=p["product_id"])["_source"]["name"] == p["name"] for p in changed):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the running consumer did not index the new messages within 60s")
        assert consumer.poll() is None  # still running
    finally:
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, err
    assert "indexed 3," in out


def test_running_the_upload_again_sends_nothing_and_maps_everything(stack, workdir, bucket):
    command = (
        "python scripts/s3/upload_to_s3.py --manifest-file data/s3_upload_manifest.json "
        f"--bucket-name {bucket} --prefix products"
    )
    done = run(workdir, command)
    assert done.returncode == 0, done.stderr
    mapping = json.loads((workdir / "data" / "s3_url_mapping.json").read_text())
    assert (mapping["uploaded_images"], mapping["skipped_images"]) == (0, mapping["total_images"])
    assert len(mapping["product_to_s3_url"]) == mapping["total_images"]
    assert f"0 of {mapping['total_images']} images uploaded" in done.stdout

    done = run(workdir, command + " --force-reupload")
    assert (
        done.returncode == 0
        and json.loads((workdir / "data" / "s3_url_mapping.json").read_text())["uploaded_images"]
        == mapping["total_images"]
    )


@pytest.mark.fault(
    "the runbook's upload with images that fail",
    "exit 1 after writing the mapping, each failed image listed with its reason",
)
def test_upload_exits_1_after_writing_the_mapping_and_listing_failed_images(stack, workdir, bucket, tmp_path):
    images = tmp_path / "data" / "images"
    write_image(images / "PROD-1.jpg")
    write_image(images / "PROD-2.png", "PNG")
    assert (
        run(
            tmp_path,
            "python scripts/s3/prepare_s3_upload.py --images-dir data/images "
            "--output-file data/s3_upload_manifest.json",
        ).returncode
        == 0
    )
    (images / "PROD-2.png").write_bytes(b"\x89PNG\r\n\x1a\n changed after the manifest")

    done = run(
        tmp_path,
        "python scripts/s3/upload_to_s3.py --manifest-file data/s3_upload_manifest.json "
        f"--bucket-name {bucket} --prefix failing",
    )

    assert done.returncode == 1
    mapping = json.loads((tmp_path / "data" / "s3_url_mapping.json").read_text())
    assert (mapping["uploaded_images"], mapping["failed_images"]) == (1, 1)
    assert (
        "failed data/images/PROD-2.png: cannot read data/images/PROD-2.png: "
        "file changed since the manifest was built; rebuild the manifest"
    ) in done.stderr


@pytest.mark.fault(
    "the runbook's catalog has products without an id (neither 'product_id' nor 'id')",
    "update_catalog_with_s3_urls.py exits 1 with one error line naming the catalog, the count and where; "
    "the updated catalog is not written (a previous one is left as it was), so the Kafka step never starts on it",
)
def test_update_catalog_refuses_products_without_an_id_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    products = [
        {"product_id": "P1", "name": "one"},
        {"name": "no id at all"},
        {"id": "P3", "name": "three"},
    ]
    (data / "products.json").write_text(json.dumps(products))
    urls = {pid: f"https://b.example/products/{pid}.jpg" for pid in ("P1", "P3")}
    (data / "s3_url_mapping.json").write_text(json.dumps({"product_to_s3_url": urls}))
    previous = '[{"product_id": "P0", "image_url": "https://b.example/products/P0.jpg"}]\n'
    (data / "products_with_s3_urls.json").write_text(previous)
    command = (
        "python scripts/s3/update_catalog_with_s3_urls.py --catalog-file data/products.json "
        "--s3-url-mapping-file data/s3_url_mapping.json --output-file data/products_with_s3_urls.json"
    )

    assert error_line(run(tmp_path, command)) == (
        "error: catalog data/products.json has 1 products without 'product_id' or 'id' (at #2); they cannot be "
        "keyed in Kafka. Give every product an id and run again (data/products_with_s3_urls.json was not written)"
    )
    assert (data / "products_with_s3_urls.json").read_text() == previous
    assert sorted(p.name for p in data.iterdir()) == [
        "products.json",
        "products_with_s3_urls.json",
        "s3_url_mapping.json",
    ]

    same = command.replace("--output-file data/products_with_s3_urls.json", "--output-file data/products.json")
    assert "is the catalog itself" in error_line(run(tmp_path, same))
    assert json.loads((data / "products.json").read_text()) == products

    products[1]["product_id"] = "P2"
    (data / "products.json").write_text(json.dumps(products))
    done = run(tmp_path, command)
    assert done.returncode == 0, done.stderr
    written = json.loads((data / "products_with_s3_urls.json").read_text())
    assert [p.get("product_id", p.get("id")) for p in written] == ["P1", "P2", "P3"]
    assert [p.get("image_url") for p in written] == [urls["P1"], None, urls["P3"]]
    assert sorted(p.name for p in data.iterdir()) == [
        "products.json",
        "products_with_s3_urls.json",
        "s3_url_mapping.json",
    ]


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (
            "python scripts/s3/prepare_s3_upload.py --images-dir data/nowhere --output-file data/m.json",
            {},
            "error: images directory data/nowhere does not exist",
        ),
        (
            "python scripts/s3/upload_to_s3.py --manifest-file data/s3_upload_manifest.json "
            "--bucket-name no-such-bucket-x --prefix p",
            {},
            "error: bucket 'no-such-bucket-x' at http",
        ),
        (
            "python scripts/s3/upload_to_s3.py --manifest-file data/none.json --bucket-name b",
            {},
            "error: manifest data/none.json does not exist; create it with prepare_s3_upload.py",
        ),
        (
            "python scripts/s3/update_catalog_with_s3_urls.py --catalog-file data/images/README.txt "
            "--s3-url-mapping-file data/s3_url_mapping.json --output-file data/x.json",
            {},
            "error: catalog data/images/README.txt is not JSON",
        ),
        (
            "python scripts/kafka/product_producer.py --products-file data/products_with_s3_urls.json",
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:{port}"},
            "error: cannot reach Kafka at 127.0.0.1:",
        ),
        (
            "python scripts/kafka/product_producer.py --products-file data/products_with_s3_urls.json",
            {"KAFKA_BOOTSTRAP_SERVERS": ""},
            "error: no Kafka brokers configured; set KAFKA_BOOTSTRAP_SERVERS",
        ),
        (
            "python scripts/kafka/product_consumer.py --once",
            {"ELASTICSEARCH_URL": ""},
            "error: no Elasticsearch configured; set ELASTICSEARCH_URL",
        ),
        (
            "python scripts/s3/prepare_s3_upload.py --images-dir data/nowhere --output-file data/m.json --dry-run",
            {},
            "error: images directory data/nowhere does not exist",
        ),
        (
            "python scripts/s3/upload_to_s3.py --manifest-file data/s3_upload_manifest.json "
            "--bucket-name no-such-bucket-x --prefix p --dry-run",
            {},
            "error: bucket 'no-such-bucket-x' at http",
        ),
        (
            "python scripts/s3/upload_to_s3.py --manifest-file data/none.json --bucket-name b --dry-run",
            {},
            "error: manifest data/none.json does not exist; create it with prepare_s3_upload.py",
        ),
        (
            "python scripts/s3/update_catalog_with_s3_urls.py --catalog-file data/images/README.txt "
            "--s3-url-mapping-file data/s3_url_mapping.json --output-file data/x.json --dry-run",
            {},
            "error: catalog data/images/README.txt is not JSON",
        ),
        (
            "python scripts/kafka/product_producer.py --products-file data/products_with_s3_urls.json --dry-run",
            {"KAFKA_BOOTSTRAP_SERVERS": ""},
            "error: no Kafka brokers configured; set KAFKA_BOOTSTRAP_SERVERS",
        ),
    ],
    ids=[
        "missing-images-dir",
        "missing-bucket",
        "missing-manifest",
        "catalog-not-json",
        "broker-unreachable",
        "no-brokers",
        "no-elasticsearch",
        "dry-run-missing-images-dir",
        "dry-run-missing-bucket",
        "dry-run-missing-manifest",
        "dry-run-catalog-not-json",
        "dry-run-no-brokers",
    ],
)
def test_bad_input_is_one_clear_error_line(stack, workdir, command, env, expected):
    env = {k: v.format(port=unused_port()) for k, v in env.items()}
    assert error_line(run(workdir, command, env)).startswith(expected)


@pytest.mark.parametrize(
    "script",
    [
        "s3/prepare_s3_upload.py",
        "s3/upload_to_s3.py",
        "s3/update_catalog_with_s3_urls.py",
        "kafka/product_producer.py",
        "kafka/product_consumer.py",
    ],
)
def test_help_explains_the_command(script):
    done = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage:" in done.stdout
    if script in ("s3/upload_to_s3.py", "kafka/product_producer.py", "kafka/product_consumer.py"):
        assert (
            "AWS_ENDPOINT_URL" in done.stdout
            and "KAFKA_BOOTSTRAP_SERVERS" in done.stdout
            and "ELASTICSEARCH_URL" in done.stdout
        )


def test_doctor_passes_after_the_runbook_and_names_what_fails(stack, workdir, bucket):
    done = run(workdir, f"python scripts/doctor.py --bucket-name {bucket}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[ok]") == 6 and "all six checks passed" in done.stdout

    (workdir / "data" / "stale.json").write_text(
        json.dumps([{"product_id": "PROD-000002", "image_url": "data/images/PROD-000002.jpg"}])
    )
    done = run(
        workdir,
        "python scripts/doctor.py --catalog-file data/stale.json --images-dir data/nowhere",
        {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{unused_port()}"},
    )
    assert done.returncode == 1
    lines = dict(line.split("] ", 1)[1].split(": ", 1) for line in done.stdout.splitlines() if line.startswith("["))
    assert lines["2. bucket reachable and writable"].startswith(
        "cannot reach S3 for bucket"
    )  # the bucket comes from the mapping
    assert lines["3. product images present"].startswith("images directory data/nowhere does not exist")
    assert lines["6. catalog updated with S3 URLs"] == (
        "1 products in data/stale.json lack their S3 URL from data/s3_url_mapping.json; "
        "rerun update_catalog_with_s3_urls.py"
    )
    assert "[ok] 4. manifest valid" in done.stdout and "[ok] 5. S3 URL mapping valid" in done.stdout
    assert "3 of 6 checks failed" in done.stdout


def test_a_manifest_in_the_runbooks_own_format_still_uploads(stack, bucket, tmp_path):
    """Exactly the keys the reference shows: no images_dir, no checksums, paths relative to the working directory."""
    images = tmp_path / "data" / "images"
    jpeg = write_image(images / "PROD-000001.jpg")
    png = write_image(images / "PROD-000002.png", "PNG")
    manifest = {
        "timestamp": "2025-03-13T20:44:33.123456",
        "total_images": 2,
        "total_size_bytes": jpeg.stat().st_size + png.stat().st_size,
        "total_size_mb": 0.0,
        "images": [
            {
                "product_id": "PROD-000001",
                "file_path": "data/images/PROD-000001.jpg",
                "file_size": jpeg.stat().st_size,
                "content_type": "image/jpeg",
            },
            {
                "product_id": "PROD-000002",
                "file_path": "data/images/PROD-000002.png",
                "file_size": png.stat().st_size,
                "content_type": "image/png",
            },
        ],
    }
    (tmp_path / "data" / "s3_upload_manifest.json").write_text(json.dumps(manifest, indent=2))

    done = run(
        tmp_path,
        "python scripts/s3/upload_to_s3.py --manifest-file data/s3_upload_manifest.json "
        f"--bucket-name {bucket} --prefix legacy",
    )

    assert done.returncode == 0, done.stderr
    mapping = json.loads((tmp_path / "data" / "s3_url_mapping.json").read_text())
    assert mapping["product_to_s3_url"] == {
        "PROD-000001": f"{stack.s3_endpoint}/{bucket}/legacy/PROD-000001.jpg",
        "PROD-000002": f"{stack.s3_endpoint}/{bucket}/legacy/PROD-000002.png",
    }
    obj = s3_client(stack).get_object(Bucket=bucket, Key="legacy/PROD-000002.png")
    assert obj["Body"].read() == png.read_bytes() and obj["ContentType"] == "image/png"


def _tree(folder) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under folder: a dry run must leave this exactly as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _objects(s3, bucket: str) -> dict[str, tuple]:
    """key -> (size, ETag, LastModified) of every object in the bucket: any upload changes one of them."""
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: (o["Size"], o["ETag"], o["LastModified"]) for o in listed}


def _topics(stack) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=15).topics)


def test_every_command_dry_runs_in_the_runbooks_order_and_changes_nothing(stack, tmp_path):
    """The runbook in order, each command first with --dry-run, then for real: the dry run prints the plan the real
    run then carries out, and changes nothing (no file, no temporary file left, no object, no topic, no message)."""
    data = tmp_path / "data"
    sample = sample_data.generate(data, count=12, min_kb=2, max_kb=8)
    (data / "images" / "README.txt").write_text("not an image")
    scratch = tmp_path / "scratch"  # the commands' temporary folder (TMPDIR), inside what must stay unchanged
    scratch.mkdir()
    s3, bucket = s3_client(stack), f"dry-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)

    def dry_run(command: str, env=None) -> str:
        """The command with --dry-run: exit 0, nothing under tmp_path and nothing in the bucket changed; its stdout."""
        files, objects = _tree(tmp_path), _objects(s3, bucket)
        done = run(tmp_path, f"{command} --dry-run", {"TMPDIR": str(scratch), **(env or {})})
        assert done.returncode == 0, done.stderr
        assert _tree(tmp_path) == files and _objects(s3, bucket) == objects
        return done.stdout

    prepare = (
        "python scripts/s3/prepare_s3_upload.py --images-dir data/images --output-file data/s3_upload_manifest.json"
    )
    planned = dry_run(prepare)
    assert not (data / "s3_upload_manifest.json").exists()
    assert run(tmp_path, prepare).returncode == 0
    manifest = json.loads((data / "s3_upload_manifest.json").read_text())
    assert manifest["total_images"] == sample.images == 12 and manifest["skipped_files"] == 1
    size, skipped = manifest["total_size_bytes"], manifest["skipped"][0]
    assert planned == (
        f"dry run: manifest data/s3_upload_manifest.json would list 12 images ({size} bytes, {size / 1e6:.1f} MB), "
        f"1 files skipped (e.g. data/images/README.txt: {skipped['reason']}); nothing was written\n"
    )

    images = manifest["images"]
    for image in images[:2]:  # already in the bucket as they are: skipped
        s3.put_object(
            Bucket=bucket, Key=f"products/{image['file_name']}", Body=(tmp_path / image["file_path"]).read_bytes()
        )
    s3.put_object(Bucket=bucket, Key=f"products/{images[2]['file_name']}", Body=b"an older image")  # uploaded again
    upload = (
        "python scripts/s3/upload_to_s3.py --manifest-file data/s3_upload_manifest.json "
        f"--bucket-name {bucket} --prefix products --batch-size 4"
    )
    where = f"bucket '{bucket}' at {stack.s3_endpoint}"
    to_upload = sum(image["file_size"] for image in images[2:])
    lines = dry_run(upload).splitlines()
    assert lines == [
        f"dry run: 10 of 12 images ({to_upload} bytes, {to_upload / 1e6:.1f} MB) would be uploaded to {where} "
        "in 3 batches, 2 unchanged in the bucket would be skipped",
        *(f"  would upload products/{image['file_name']}" for image in images[2:7]),
        *(f"  unchanged products/{image['file_name']}" for image in images[:2]),
        "nothing was uploaded and data/s3_url_mapping.json was not written",
    ]
    assert dry_run(upload + " --force-reupload").splitlines()[0] == (
        f"dry run: 12 of 12 images ({size} bytes, {size / 1e6:.1f} MB) would be uploaded to {where} "
        "in 3 batches, none skipped (--force-reupload: the bucket was not listed)"
    )
    assert not (data / "s3_url_mapping.json").exists()
    assert run(tmp_path, upload).returncode == 0
    mapping = json.loads((data / "s3_url_mapping.json").read_text())
    assert (mapping["uploaded_images"], mapping["skipped_images"], mapping["failed_images"]) == (10, 2, 0)
    assert dry_run(upload).splitlines()[0] == (
        f"dry run: 0 of 12 images (0 bytes, 0.0 MB) would be uploaded to {where} "
        "in 0 batches, 12 unchanged in the bucket would be skipped"
    )

    update = (
        "python scripts/s3/update_catalog_with_s3_urls.py --catalog-file data/products.json "
        "--s3-url-mapping-file data/s3_url_mapping.json --output-file data/products_with_s3_urls.json"
    )
    counts = "12 products, 11 with S3 image_url, 1 without image, 1 images without product"
    assert (sample.products, sample.products_without_image, sample.images_without_product) == (12, 1, 1)
    assert (
        dry_run(update)
        == f"dry run: catalog data/products_with_s3_urls.json would have {counts}; nothing was written\n"
    )
    assert not (data / "products_with_s3_urls.json").exists()
    done = run(tmp_path, update)
    assert done.returncode == 0 and done.stdout == f"catalog data/products_with_s3_urls.json: {counts}\n"
    written = (data / "products_with_s3_urls.json").stat()
    assert dry_run(update).startswith("dry run: catalog data/products_with_s3_urls.json would have 12 products, 11 ")
    after = (data / "products_with_s3_urls.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # not replaced either

    topic = f"dry-{uuid.uuid4().hex[:8]}"
    produce = (
        f"python scripts/kafka/product_producer.py --products-file data/products_with_s3_urls.json --topic {topic}"
    )
    assert dry_run(produce) == (
        f"dry run: 12 products would be published to topic '{topic}' at {stack.kafka_bootstrap} (created if missing); "
        "Kafka was not contacted and nothing was sent\n"
    )
    assert topic not in _topics(stack)
    nobody = f"127.0.0.1:{unused_port()}"  # Kafka is not contacted: brokers nobody listens on make no difference
    assert f"at {nobody} (created if missing)" in dry_run(produce, {"KAFKA_BOOTSTRAP_SERVERS": nobody})
    assert run(tmp_path, produce).returncode == 0
    sent = sorted((m.partition(), m.offset(), m.key()) for m in read_messages(stack.kafka_bootstrap, topic))
    assert len(sent) == 12
    dry_run(produce)
    assert sorted((m.partition(), m.offset(), m.key()) for m in read_messages(stack.kafka_bootstrap, topic)) == sent


@pytest.mark.fault(
    "a runbook command run with --dry-run on bad input (no images, products without an id, the catalog as output)",
    "the same exit 1 and error line as the real run, and nothing written",
)
def test_a_dry_run_refuses_bad_input_with_the_real_runs_error(stack, tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "README.txt").write_text("not an image")
    (data / "products.json").write_text(json.dumps([{"product_id": "P1"}, {"name": "no id"}, {"id": "P3"}]))
    (data / "s3_url_mapping.json").write_text(json.dumps({"product_to_s3_url": {"P1": "https://b.example/P1.jpg"}}))
    update = (
        "python scripts/s3/update_catalog_with_s3_urls.py --catalog-file data/products.json "
        "--s3-url-mapping-file data/s3_url_mapping.json --output-file data/products_with_s3_urls.json"
    )
    commands = [
        "python scripts/s3/prepare_s3_upload.py --images-dir data/images --output-file data/s3_upload_manifest.json",
        update,
        update.replace("--output-file data/products_with_s3_urls.json", "--output-file data/products.json"),
    ]
    for command in commands:
        before = _tree(tmp_path)
        dry = error_line(run(tmp_path, command + " --dry-run"))
        assert _tree(tmp_path) == before
        assert dry == error_line(run(tmp_path, command))
    assert sorted(p.name for p in data.iterdir()) == ["images", "products.json", "s3_url_mapping.json"]

    topic = f"dry-{uuid.uuid4().hex[:8]}"
    produce = f"python scripts/kafka/product_producer.py --products-file data/products.json --topic {topic}"
    dry = error_line(run(tmp_path, produce + " --dry-run"))
    assert dry == (
        "error: product #2 has no 'product_id' or 'id'; it cannot be keyed in Kafka. Fix the catalog and publish again"
    )
    assert topic not in _topics(stack)
    assert dry == error_line(run(tmp_path, produce))  # which creates the topic and sends P1 first
