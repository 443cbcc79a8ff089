"""The recorded slurmrestd exchanges, by (Slurm release, API version). See recordings/README.md."""

from __future__ import annotations

import json
from pathlib import Path

RECORDINGS = Path(__file__).parent / "recordings"
# Versions no Slurm of the local stack serves: answers built from the documentation, not recorded.
CONSTRUCTED = {"v0.0.39": RECORDINGS / "constructed-v0.0.39"}


def recorded_sets() -> list[tuple[str, str]]:
    """(release, version) of every set recorded from a real slurmrestd."""
    return sorted((d.parent.name.removeprefix("slurm-"), d.name) for d in RECORDINGS.glob("slurm-*/v0.0.*")
                  if d.is_dir())


def folder(release: str, version: str) -> Path:
    return CONSTRUCTED[version] if release == "constructed" else RECORDINGS / f"slurm-{release}" / version


def exchange(release: str, version: str, name: str) -> dict:
    return json.loads((folder(release, version) / f"{name}.json").read_text())


def set_id(release: str, version: str) -> str:
    return f"slurm-{release}-{version}"
