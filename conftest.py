"""Doctests of the product folders under their installed names.

The folders at the top of the repository install as ``learnscore.*`` (pyproject.toml,
``package-dir``), but pytest's ``--doctest-modules`` names a file by its folder
(``core/durations.py`` → ``core.durations``) and would import a second copy of it. Importing
the module by its real name first and registering it under the folder name makes pytest find
it in ``sys.modules`` and run its examples in the one true module.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_PACKAGE_DIRS = {folder: package for package, folder in
                 tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].items()
                 if folder != "learnscore"}


@pytest.hookimpl(tryfirst=True)
def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix != ".py" or not parent.config.getoption("doctestmodules", False):
        return None
    relative = file_path.resolve().relative_to(ROOT) if file_path.resolve().is_relative_to(ROOT) else None
    if relative is None or relative.parts[0] not in _PACKAGE_DIRS:
        return None
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    folder_name = ".".join(parts)
    real_name = ".".join([_PACKAGE_DIRS[parts[0]], *parts[1:]])
    sys.modules.setdefault(folder_name, importlib.import_module(real_name))
    return None
