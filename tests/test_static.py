"""Static checks run with the tests, so that one command covers everything (as CI does)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "monitor", "tests", "benchmarks", "grafana", "deploy"],
        ["ruff", "format", "--check", "monitor", "tests", "benchmarks", "grafana", "deploy"],
        ["lint-imports"],
        ["mypy"],
    ],
    ids=["ruff", "ruff-format", "import-layers", "mypy"],
)
def test_static_check(command):
    result = subprocess.run(
        [_tool(command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_daemon_side_of_the_package_does_not_import_torch():
    """What the daemon process imports must not pull in torch (workers do, in their own process)."""
    code = (
        "import sys\n"
        "import monitor.cli, monitor.cli._serve, monitor.pipeline, monitor.engine, monitor.store\n"
        "import monitor.sources, monitor.data, monitor.daemon, monitor.api, monitor.metrics, monitor.demo\n"
        "assert 'torch' not in sys.modules, [m for m in sys.modules if m.startswith('torch')][:3]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", ["benchmarks/baseline.py", "tests/test_reference.py"])
def test_the_references_that_check_the_engine_share_no_code_with_it(path):
    """A baseline that imported the engine's code would measure the engine against itself."""
    import ast

    tree = ast.parse((REPO / path).read_text())
    imported = [
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.split(".")[0] == "monitor"], imported
