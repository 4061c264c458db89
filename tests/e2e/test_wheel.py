"""The wheel a user installs: one top-level name, config and Maven manifests inside, and the
commands work from an empty folder outside the checkout (``test_fast_demo`` runs the demo so)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from learnscore.core.ports import free_port
from tests.e2e.conftest import ROOT, wheel_names

pytestmark = [pytest.mark.integration]


def test_the_wheel_holds_learnscore_alone_with_its_conf_and_manifests(built_wheel):
    names = wheel_names(built_wheel)
    tops = {name.split("/")[0] for name in names}
    assert len(tops) == 2 and "learnscore" in tops and all(t.endswith(".dist-info") for t in tops - {"learnscore"})
    for needed in ("learnscore/conf/base.yaml", "learnscore/conf/local.yaml", "learnscore/conf/cluster.yaml",
                   "learnscore/jvm/spark-jars.xml", "learnscore/jvm/kafka-broker.xml",
                   "learnscore/streaming/job.py", "learnscore/core/config.py", "learnscore/cli.py",
                   "learnscore/monitoring/static/dashboard.html", "learnscore/schemas/json/ScoreIssued.v1.json"):
        assert needed in names, needed
    assert not [name for name in names if "/results/" in name or name.startswith("learnscore/tests")]
    # every package folder of the checkout made it in
    for folder in ("core", "schemas", "model", "registry", "streaming", "batch", "serving", "monitoring",
                   "bi", "simulator", "bench"):
        for module in (ROOT / folder).rglob("*.py"):
            assert f"learnscore/{module.relative_to(ROOT)}" in names, module


def _run(learnscore: Path, *args: str, cwd: Path, env: dict[str, str], timeout: float = 300):
    return subprocess.run([str(learnscore), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_commands_work_from_an_empty_folder(installed_learnscore, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LEARNSCORE__", "PYTHONPATH"))}
    env.update({"LEARNSCORE__BROKER__PORT": str(free_port()), "LEARNSCORE__BROKER__CONTROLLER_PORT": str(free_port())})
    env["LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{env['LEARNSCORE__BROKER__PORT']}"

    shown = _run(installed_learnscore, "--help", cwd=empty, env=env)
    assert shown.returncode == 0 and "stack" in shown.stdout and "demo" in shown.stdout

    where = _run(installed_learnscore, "-v", "stack", "status", cwd=empty, env=env)
    assert str(empty / ".state") in where.stdout, where.stdout + where.stderr

    jars = _run(installed_learnscore, "jars", cwd=empty, env=env, timeout=600)
    assert jars.returncode == 0, jars.stderr[-2000:]
    assert list((empty / ".cache" / "jars" / "spark").glob("delta-spark_2.13-*.jar"))
    assert list((empty / ".cache" / "jars" / "kafka").glob("kafka_2.13-*.jar"))
    assert list((empty / ".cache" / "jars" / "bi").glob("learnscore-bi-guard-*.jar"))  # built from the shipped sources

    up = _run(installed_learnscore, "stack", "up", cwd=empty, env=env, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        assert "kafka   ready at" in up.stdout
    finally:
        down = _run(installed_learnscore, "stack", "down", cwd=empty, env=env)
    assert "kafka: stopped" in down.stdout
    # state, jars and logs went to the working folder, nothing into the installed package
    (package,) = installed_learnscore.parent.parent.glob("lib/python3.*/site-packages/learnscore")
    assert not [p for p in package.rglob("*") if p.suffix not in (".py", ".pyc", ".yaml", ".xml", ".json", ".js", ".html",
                                                                  ".java")
                and p.is_file()]
    assert (empty / ".state" / "kafka").is_dir()
