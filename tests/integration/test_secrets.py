"""The S3 secret key reaches the clients and nothing else: not XCom, not artifacts, not messages, not logs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from devstack import local_airflow
from devstack.embedded_stack import SECRET_KEY
from tests.helpers import read_topic


@pytest.mark.fault(
    "credentials in connections during a full run", "the secret key appears in no XCom, artifact, Kafka message or log"
)
def test_the_secret_key_appears_in_no_xcom_artifact_message_or_log(published, topic, capfd, caplog):
    assert SECRET_KEY in os.environ["AIRFLOW_CONN_AWS_DEFAULT"]  # the connection really carries it

    assert SECRET_KEY not in json.dumps(published["run"].xcoms)
    home = Path(os.environ["CATALOG_PUBLISHER_HOME"])
    artifacts = [p for p in home.rglob("*") if p.is_file()]
    assert len(artifacts) > 5
    assert [p for p in artifacts if SECRET_KEY.encode() in p.read_bytes()] == []
    messages = read_topic(published["stack"].kafka_bootstrap, published["topic"])
    assert messages and SECRET_KEY not in json.dumps(messages)

    data = published["data"]
    conf = {
        "images_dir": str(data / "images"),
        "catalog_file": str(data / "products.json"),
        "bucket": published["bucket"],
        "topic": topic,
    }
    caplog.set_level(logging.INFO)  # every INFO line the tasks log through the standard library
    run = local_airflow.run_dag("publish_product_images", conf)
    output = capfd.readouterr()
    assert run.succeeded
    assert "Kafka confirmed all" in caplog.text  # INFO lines were captured, not only warnings
    assert SECRET_KEY not in caplog.text + output.out + output.err
