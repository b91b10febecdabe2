"""The package's own habits: no module reaches into another's private names (import-linter, run by
.ci/run, checks the layers)."""

import ast
import re
from pathlib import Path

import pytest

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


def test_a_bug_in_syncnet_keeps_its_traceback_and_a_user_error_is_one_line(monkeypatch, capsys):
    """cli.main prints one line for syncnet.UserError and OS errors only; a TypeError is our bug."""
    import syncnet.scoring
    from syncnet.cli import main
    from syncnet.errors import UserError

    def bug(args):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(syncnet.scoring, "run_command", bug)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["score", "clip.mp4"])

    def bad_option(args):
        raise UserError("--vshift must be >= 0, got -1\nmore detail")

    monkeypatch.setattr(syncnet.scoring, "run_command", bad_option)
    assert main(["score", "clip.mp4"]) == 1
    assert capsys.readouterr().err == "syncnet score: error: --vshift must be >= 0, got -1\n"
