"""The registries' layout on a cluster's shared storage: pure functions, no I/O.

Each tenant has one area, <storage>/<namespace>, with `models/` and `datasets/` in it. Entries are plain files
named after the entry (`models/<name>.pth`, `datasets/<name>.<format>`); a dataset's details (sample count,
dimensions) sit beside it in `datasets/<name>.<format>.json`. Files being written carry a `.partial-` name that
no listing shows, and are renamed into place only when complete.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from aifactory.models import StorageSpec

MODELS = "models"
DATASETS = "datasets"
MODEL_SUFFIX = ".pth"
# Dataset formats the trainer reads, by file suffix (the uploaded file's).
DATASET_FORMATS = {".csv": "csv", ".npz": "npz"}
DETAILS_SUFFIX = ".json"
PARTIAL_MARK = ".partial-"

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class InvalidName(ValueError):
    """A registry name that is not a plain file name (it could leave the tenant's area)."""


def checked_name(name: str, what: str = "name") -> str:
    """`name` when it is a plain name: letters, digits, `.`, `_`, `-`, not starting with a dot, no `..`."""
    if not NAME_PATTERN.fullmatch(name or "") or ".." in name or PARTIAL_MARK in name:
        raise InvalidName(f"Invalid {what} {name!r}: use letters, digits, '.', '_' and '-' (at most 128, not "
                          "starting with '.' or '-', no '..', no '/')")
    return name


def tenant_area(storage: StorageSpec, namespace: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace):
        raise InvalidName(f"namespace {namespace!r} is not a DNS label")
    return str(PurePosixPath(storage.path) / namespace)


def models_dir(storage: StorageSpec, namespace: str) -> str:
    return f"{tenant_area(storage, namespace)}/{MODELS}"


def datasets_dir(storage: StorageSpec, namespace: str) -> str:
    return f"{tenant_area(storage, namespace)}/{DATASETS}"


def model_file(name: str) -> str:
    return checked_name(name, "model name") + MODEL_SUFFIX


def model_path(storage: StorageSpec, namespace: str, name: str) -> str:
    return f"{models_dir(storage, namespace)}/{model_file(name)}"


def model_name_of(file_name: str) -> str | None:
    """The entry a file of models/ is, or None for what is not an entry (partial uploads, other files)."""
    if PARTIAL_MARK in file_name or not file_name.endswith(MODEL_SUFFIX):
        return None
    name = file_name[: -len(MODEL_SUFFIX)]
    return name if NAME_PATTERN.fullmatch(name) and ".." not in name else None


def dataset_format(file_name: str) -> str | None:
    """The format of an uploaded file from its name (`.csv`, `.npz`), or None when the trainer cannot read it."""
    return next((fmt for suffix, fmt in DATASET_FORMATS.items() if file_name.lower().endswith(suffix)), None)


def dataset_file(name: str, fmt: str) -> str:
    suffix = next(s for s, f in DATASET_FORMATS.items() if f == fmt)
    return checked_name(name, "dataset name") + suffix


def dataset_of(file_name: str) -> tuple[str, str] | None:
    """(name, format) of a file of datasets/, or None for what is not an entry (details, partial uploads)."""
    if PARTIAL_MARK in file_name:
        return None
    for suffix, fmt in DATASET_FORMATS.items():
        if file_name.endswith(suffix):
            name = file_name[: -len(suffix)]
            if NAME_PATTERN.fullmatch(name) and ".." not in name:
                return name, fmt
    return None


def partial_name(final: str, token: str) -> str:
    """Where a file is written before it is complete: a hidden name in the same directory, never listed."""
    path = PurePosixPath(final)
    return str(path.with_name(f".{path.name}{PARTIAL_MARK}{token}"))
