"""JVM jars from Maven Central, resolved by ``mvn`` from the manifests in ``jvm/``.

Two separate classpaths: Spark's extras (Delta, the Kafka connector) and the local Kafka broker;
and one jar built from source, the BI server's guard (``jvm/bi-guard``: its password provider and
read-only SQL check). Nothing is downloaded by Spark's own ``spark.jars.packages`` at run time.
The manifests ship inside the package (``learnscore.jvm``); Maven runs on a copy beside the
target folder, so an installed, read-only package is never written to.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from learnscore.core.config import Config, ConfigError

log = logging.getLogger(__name__)

MANIFESTS = {"spark": "spark-jars.xml", "kafka": "kafka-broker.xml"}
BI_GUARD = "bi-guard"  # a Maven module in learnscore.jvm: pom.xml and src/


class JarsMissing(ConfigError):
    pass


def resolve_jars(config: Config, force: bool = False) -> dict[str, list[Path]]:
    """Resolve both jar sets with ``mvn dependency:copy-dependencies`` (skipped when present)."""
    targets = {"spark": config.spark.jars_dir, "kafka": config.broker.jars_dir}
    if shutil.which("mvn") is None:
        raise JarsMissing("mvn (Apache Maven) is not on PATH; install Maven 3.8+ and run again")
    resolved = {}
    for name, target in targets.items():
        if force or not list(Path(target).glob("*.jar")):
            Path(target).mkdir(parents=True, exist_ok=True)
            log.info("resolving %s jars from %s into %s", name, MANIFESTS[name], target)
            manifest = _manifest_copy(name, Path(target))
            command = ["mvn", "-B", "-q", "-f", str(manifest),
                       "dependency:copy-dependencies", f"-DoutputDirectory={target}"]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise JarsMissing(
                    f"mvn could not resolve the {name} jars (learnscore/jvm/{MANIFESTS[name]}):\n"
                    f"{(result.stdout + result.stderr)[-2000:]}\n"
                    "Check that Maven Central is reachable (or a mirror in ~/.m2/settings.xml)."
                )
        resolved[name] = jar_files(Path(target), name)
    resolved["bi"] = build_bi_guard(config, force)
    return resolved


def bi_guard_dir(config: Config) -> Path:
    """Where the built BI guard jar lives (beside the Spark jars)."""
    return Path(config.spark.jars_dir).parent / "bi"


def build_bi_guard(config: Config, force: bool = False) -> list[Path]:
    """Build ``jvm/bi-guard`` with ``mvn package`` into :func:`bi_guard_dir` (skipped when built)."""
    target = bi_guard_dir(config)
    if force or not list(target.glob("*.jar")):
        module = target.parent / f".maven-{BI_GUARD}"
        shutil.rmtree(module, ignore_errors=True)
        _copy_resources(resources.files("learnscore.jvm").joinpath(BI_GUARD), module)
        log.info("building the BI guard (jvm/%s) into %s", BI_GUARD, target)
        result = subprocess.run(["mvn", "-B", "-q", "-f", str(module / "pom.xml"), "package"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise JarsMissing(f"mvn could not build the BI guard (learnscore/jvm/{BI_GUARD}):\n"
                              f"{(result.stdout + result.stderr)[-2000:]}\n"
                              "Check that Maven Central is reachable (or a mirror in ~/.m2/settings.xml).")
        target.mkdir(parents=True, exist_ok=True)
        for jar in (module / "target").glob("*.jar"):
            shutil.copy2(jar, target / jar.name)
    return jar_files(target, "BI guard")


def _copy_resources(source, destination: Path) -> None:
    """Copy a package resource folder (``importlib.resources`` traversable) to ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_resources(entry, destination / entry.name)
        else:
            (destination / entry.name).write_bytes(entry.read_bytes())


def manifest_text(name: str) -> str:
    """The Maven manifest of one jar set (``spark`` or ``kafka``) as shipped in the package."""
    return resources.files("learnscore.jvm").joinpath(MANIFESTS[name]).read_text()


def _manifest_copy(name: str, target: Path) -> Path:
    folder = target.parent / f".maven-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "pom.xml"
    manifest.write_text(manifest_text(name))
    return manifest


def jar_files(jars_dir: Path, name: str) -> list[Path]:
    jars = sorted(Path(jars_dir).glob("*.jar"))
    if not jars:
        raise JarsMissing(
            f"no {name} jars in {jars_dir}; resolve them with `learnscore jars` (or `make jars`)"
        )
    return jars
