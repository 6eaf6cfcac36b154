"""The package's structure: the import contracts in pyproject.toml (layers, no cycles, what shipped files import),
checked with import-linter's `lint-imports`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytest.importorskip("importlinter", reason="the structure check needs the dev extra's import-linter")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` run on the package and the pyproject.toml in root, without writing a cache."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    return subprocess.run(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True, timeout=120)


def test_imports_go_down_the_layers_without_cycles():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_an_import_up_the_layers_breaks_the_check(tmp_path):
    shutil.copytree(REPO / "vanilla_transformer", tmp_path / "vanilla_transformer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    # A lazy import inside a function counts as much as one at the top of the file.
    with (tmp_path / "vanilla_transformer/evaluation.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef upwards():\n    from .training.run import train\n\n    return train\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout[-4000:]
    assert "vanilla_transformer.evaluation -> vanilla_transformer.training.run" in result.stdout
