"""requirements-managed.txt, the file for environments that bring their own Airflow (Astro Runtime, MWAA, Cloud
Composer, the Helm chart's image): it names the same libraries as requirements.txt but Airflow and the compose
stack's executor, and resolves from PyPI together with the Airflow floor without replacing that Airflow."""

from __future__ import annotations

import json
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from include.catalog_publisher.dag_defaults import AIRFLOW_FLOOR
from include.catalog_publisher.defaults import project_root

COMPOSE_STACK_ONLY = {
    "apache-airflow",
    "apache-airflow-providers-celery",
    "apache-airflow-providers-postgres",
    "celery",
}


def requirements(name: str) -> list[Requirement]:
    lines = (project_root() / name).read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_it_names_every_library_of_requirements_txt_but_airflow_and_the_executor():
    runtime = {canonicalize_name(r.name) for r in requirements("requirements.txt")} - COMPOSE_STACK_ONLY
    managed = requirements("requirements-managed.txt")
    assert {canonicalize_name(r.name) for r in managed} == runtime
    pins = {canonicalize_name(r.name): r.specifier for r in requirements("requirements.txt")}
    for requirement in managed:  # the tested version is allowed, and no exact pin
        tested = next(iter(pins[canonicalize_name(requirement.name)])).version
        assert requirement.specifier.contains(tested) and "==" not in str(requirement.specifier), requirement


def test_it_resolves_with_the_airflow_floor_and_keeps_that_airflow(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        + [f"apache-airflow=={AIRFLOW_FLOOR}", "-r", str(project_root() / "requirements-managed.txt")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert Version(chosen["apache-airflow-core"]) == Version(AIRFLOW_FLOOR)
    for requirement in requirements("requirements-managed.txt"):
        assert requirement.specifier.contains(chosen[canonicalize_name(requirement.name)]), requirement
