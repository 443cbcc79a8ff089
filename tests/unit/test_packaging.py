"""Both installs work and nothing importable is called `operator` at the top level."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = (
    "import operator, aifactory, aifactory.operator.aiservice, aifactory.api, aifactory.recipes;"
    "from aifactory.recipes import builtin_recipes;"
    "assert operator.__file__.startswith(sys.base_prefix), operator.__file__;"
    "assert 'embeddings/minilm' in builtin_recipes();"
    "print(aifactory.__file__)"
)


def run_check(*, cwd: Path, extra_path: str | None = None) -> str:
    code = "import sys\n" + (f"sys.path.insert(0, {extra_path!r})\n" if extra_path else "") + CHECK
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_editable_install_maps_the_top_level_folders(tmp_path):
    # From elsewhere and from the checkout itself (the checkout is then first on sys.path).
    assert run_check(cwd=tmp_path).startswith(str(REPO))
    assert run_check(cwd=REPO).startswith(str(REPO))


def test_checkout_on_pythonpath_does_not_shadow_the_standard_library(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import operator, enum; print(operator.__file__)"],
                            cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.startswith(str(REPO))


def test_regular_install_ships_subpackages_and_recipes(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert not (target / "operator").exists(), "an importable top-level `operator` was installed"
    assert (target / "aifactory" / "operator" / "aiservice.py").is_file()
    assert (target / "aifactory" / "api" / "lmstack" / "deployments.py").is_file()
    for page in ("index.html", "console.js", "console.css"):  # the web console: plain files, nothing to build
        assert (target / "aifactory" / "api" / "console" / "static" / page).is_file(), page
    out = run_check(cwd=tmp_path, extra_path=str(target))
    assert out.startswith(str(target))
