"""Every built-in recipe renders the checked-in job script in tests/golden/<category>/<name>.sh.

After a deliberate change, rewrite them with AIFACTORY_UPDATE_GOLDEN=1 and review the diff.
"""

import os
import subprocess
from pathlib import Path

import pytest

from aifactory.jobscript import render_job_script
from aifactory.recipes import builtin_recipes

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def rendered(path: str) -> str:
    recipe = builtin_recipes()[path]
    return render_job_script(recipe, f"aifactory service default/example (recipe {path})",
                             env_names=list(recipe.environment), gpus=recipe.resources.gpu or 0)


@pytest.mark.parametrize("path", sorted(builtin_recipes()))
def test_recipe_renders_its_golden_job_script(path):
    golden = GOLDEN / f"{path}.sh"
    text = rendered(path)
    if os.environ.get("AIFACTORY_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file for {path}: run with AIFACTORY_UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text(), f"{path} renders differently from {golden.name}"
    check = subprocess.run(["bash", "-n", str(golden)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr


def test_no_golden_file_without_a_recipe():
    stale = sorted(str(p.relative_to(GOLDEN).with_suffix("")) for p in GOLDEN.glob("*/*.sh"))
    assert set(stale) <= set(builtin_recipes()), set(stale) - set(builtin_recipes())
