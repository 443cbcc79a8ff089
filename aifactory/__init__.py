"""aifactory: AI services declared as Kubernetes resources, run as Slurm jobs."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout the top-level folders operator/, api/ and recipes/ are this package's subpackages
# (installs map them with setuptools' package-dir). operator/ has no __init__.py, so it can never shadow the
# standard library's `operator`, even with the checkout on sys.path.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "operator").is_dir():
    __path__.append(str(_checkout))
