"""The installed package: a wheel built from this checkout, in a virtualenv of its own.

The virtualenv finds the dependencies of the test environment through a ``.pth`` line (they
are pinned in pyproject.toml and already installed here; downloading pyspark again would add
minutes and prove nothing about our packaging), and learnscore only from the wheel: a ``.pth``
line adds a folder to ``sys.path`` without running the ``.pth`` files inside it, so this
checkout's editable install stays invisible.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the files git knows (setuptools writes build/ into the
    tree it builds; the checkout stays clean, and an untracked file cannot sneak in)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, cwd=out)
    (wheel,) = out.glob("learnscore-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_learnscore(built_wheel, tmp_path_factory) -> Path:
    """The ``learnscore`` executable of a fresh virtualenv holding the wheel."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python3.*/site-packages")
    (purelib / "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "--no-deps", "--no-index", "-q", str(built_wheel)], check=True, capture_output=True)
    return venv / "bin" / "learnscore"


def wheel_names(wheel: Path) -> list[str]:
    return zipfile.ZipFile(wheel).namelist()
