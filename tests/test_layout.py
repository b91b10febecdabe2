"""The package's own habits: no module reaches into another's private names (import-linter, run by
.ci/run, checks the layers)."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "syncnet"


def test_no_module_imports_another_modules_private_names():
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("syncnet")):
                crossings += [f"{path.relative_to(PACKAGE)}: {alias.name}" for alias in node.names if _private(alias.name)]
    assert crossings == []


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_version_is_in_one_place():
    import syncnet

    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    project = pyproject.split("\n[project]\n")[1].split("\n[")[0]
    assert re.search(r"^version\s*=", project, re.M) is None and 'dynamic = ["version"]' in project
    assert 'version = { attr = "syncnet.__version__" }' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+", syncnet.__version__)
    assert f"## {syncnet.__version__} " in (PACKAGE.parent / "CHANGELOG.md").read_text()
