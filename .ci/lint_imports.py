"""Check the import contracts of pyproject.toml ([tool.importlinter]) on the installed layout.

import-linter finds a package's modules by walking its folder, and learnscore's folders sit at
the top of the repository, mapped into ``learnscore.*`` by setuptools' ``package-dir``: walking
``learnscore/`` alone would miss ``learnscore.streaming`` and the rest. So the .py files are
copied into the layout a wheel installs (``.cache/import-tree/learnscore/...``, the mapping read
from pyproject.toml), and the linter runs on that copy.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".cache" / "import-tree"


def build_tree() -> Path:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = settings["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    for package in settings["packages"]:
        root = max((name for name in mapping if package == name or package.startswith(name + ".")), key=len)
        source = ROOT / mapping[root] / package[len(root):].lstrip(".").replace(".", "/")
        target = TREE / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for file in source.glob("*.py"):
            shutil.copy2(file, target / file.name)
    return TREE


def main() -> int:
    tree = build_tree()
    # import-linter puts the working directory first on sys.path: run from the copy, so that the
    # checkout's learnscore/ (the shell alone) cannot shadow the full package.
    os.chdir(tree)
    sys.path.insert(0, str(tree))
    from importlinter.cli import lint_imports

    return lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)


if __name__ == "__main__":
    sys.exit(main())
