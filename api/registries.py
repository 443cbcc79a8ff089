"""The model and dataset registries, once, below every face: each tenant's area on the training cluster's shared
storage, read and written through the Slurm bridge's files (this side's filesystem, or SFTP over SSH).

Uploads and downloads stream in chunks; an upload over the cluster's limit is refused (413) and, like any failed
upload, leaves nothing behind. Names are plain file names: nothing a caller sends can leave the tenant's area.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import struct
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aifactory.api.errors import ApiError, ApiErrorException, BadRequest, NotFound
from aifactory.api.identity.principal import Principal
from aifactory.clusters import Cluster, ClusterNotReady
from aifactory.slurm.files import DiskUsage, FilesUnavailable, TooLarge
from aifactory.storage import (
    DETAILS_SUFFIX, InvalidName, checked_name, dataset_file, dataset_format, dataset_of, datasets_dir, model_file,
    model_name_of, models_dir, tenant_area,
)
from aifactory.training import builtin_dataset

MIB = 1 << 20


@dataclass(frozen=True)
class Entry:
    """A file of a registry."""

    name: str
    size: int
    modified: float | None
    file_path: str  # relative to the tenant's area, e.g. models/mlp_digits.pth
    format: str | None = None
    sample_count: int | None = None
    dimensions: str | None = None


@dataclass(frozen=True)
class Download:
    entry: Entry
    chunks: AsyncIterator[bytes]


@contextlib.contextmanager
def _storage_words():
    """The storage's refusals in the API's words."""
    try:
        yield
    except InvalidName as exc:
        raise BadRequest(str(exc)) from None
    except TooLarge as exc:
        raise ApiErrorException(ApiError(413, f"File too large: the limit is {exc.limit // MIB} MiB",
                                          code="too_large")) from None
    except FilesUnavailable as exc:
        raise ApiErrorException(ApiError(503, f"Storage not reachable: {exc}", code="unavailable")) from None
    except OSError as exc:
        raise ApiErrorException(ApiError(502, f"Storage: {exc.strerror or exc}", code="storage_error")) from None


class RegistryVerbs:
    def __init__(self, state) -> None:
        self.state = state

    async def _cluster(self) -> Cluster:
        cluster = await self.state.cluster(self.state.settings.training_cluster)
        if cluster.spec.storage is None:
            raise ClusterNotReady(f"SlurmCluster {cluster.name} has no storage for the model and dataset "
                                  "registries (spec.storage.path)")
        return cluster

    # ---- models ---------------------------------------------------------------------------------------------

    async def models(self, caller: Principal) -> list[Entry]:
        cluster = await self._cluster()
        with _storage_words():
            files = await cluster.bridge.files.list(models_dir(cluster.spec.storage, caller.tenant))
        out = [Entry(name, f.size, f.modified, f"models/{f.name}") for f in files if not f.is_dir
               for name in [model_name_of(f.name)] if name]
        return sorted(out, key=lambda e: e.name)

    async def model(self, caller: Principal, name: str) -> Download:
        cluster = await self._cluster()
        with _storage_words():
            path = f"{models_dir(cluster.spec.storage, caller.tenant)}/{model_file(name)}"
            found = await cluster.bridge.files.stat(path)
        if found is None or found.is_dir:
            raise NotFound(f"Model '{name}' not found")
        entry = Entry(name, found.size, found.modified, f"models/{model_file(name)}")
        return Download(entry, cluster.bridge.files.read(path))

    async def upload_model(self, caller: Principal, name: str, chunks: AsyncIterable[bytes],
                           declared: int | None = None) -> Entry:
        cluster = await self._cluster()
        with _storage_words():
            self._check_declared(cluster, declared)
            path = f"{models_dir(cluster.spec.storage, caller.tenant)}/{model_file(name)}"
            size = await cluster.bridge.files.write(path, chunks, self.upload_limit(cluster))
        return Entry(name, size, None, f"models/{model_file(name)}")

    async def delete_model(self, caller: Principal, name: str) -> None:
        cluster = await self._cluster()
        with _storage_words():
            path = f"{models_dir(cluster.spec.storage, caller.tenant)}/{model_file(name)}"
            if not await cluster.bridge.files.remove(path):
                raise NotFound(f"Model '{name}' not found")

    # ---- datasets -------------------------------------------------------------------------------------------

    async def datasets(self, caller: Principal) -> list[Entry]:
        cluster = await self._cluster()
        directory = datasets_dir(cluster.spec.storage, caller.tenant)
        with _storage_words():
            files = await cluster.bridge.files.list(directory)
            names = {f.name for f in files}
            out = [digits_entry()]
            for f in sorted(files, key=lambda f: f.name):
                found = dataset_of(f.name)
                if f.is_dir or found is None or builtin_dataset(found[0]):
                    continue
                details = {}
                if f.name + DETAILS_SUFFIX in names:
                    details = _details(await cluster.bridge.files.read_text(f"{directory}/{f.name}{DETAILS_SUFFIX}"))
                out.append(Entry(found[0], f.size, f.modified, f"datasets/{f.name}", found[1],
                                 details.get("sample_count"), details.get("dimensions")))
        return out

    async def dataset(self, caller: Principal, name: str) -> Entry:
        if builtin_dataset(name):
            return digits_entry()
        with _storage_words():
            checked_name(name, "dataset name")
        found = next((e for e in await self.datasets(caller) if e.name == name), None)
        if found is None:
            raise NotFound(f"Dataset '{name}' not found")
        return found

    async def upload_dataset(self, caller: Principal, name: str, filename: str,
                             chunks: AsyncIterable[bytes], declared: int | None = None) -> Entry:
        fmt = dataset_format(filename or "")
        if fmt is None:
            raise BadRequest(f"Dataset file {filename!r}: upload a .csv (features, label last) or an .npz "
                             "(arrays x and y)")
        if builtin_dataset(name):
            raise ApiErrorException(ApiError(409, f"Dataset '{name}' is built in", code="conflict"))
        cluster = await self._cluster()
        details = DatasetDetails(fmt)
        with _storage_words():
            self._check_declared(cluster, declared)
            directory = datasets_dir(cluster.spec.storage, caller.tenant)
            file = dataset_file(name, fmt)
            size = await cluster.bridge.files.write(f"{directory}/{file}", details.watch(chunks),
                                                    self.upload_limit(cluster))
            about = details.result()
            text = json.dumps(about).encode()

            async def one() -> AsyncIterator[bytes]:
                yield text
            await cluster.bridge.files.write(f"{directory}/{file}{DETAILS_SUFFIX}", one())
            for other in [f for f in await cluster.bridge.files.list(directory)
                          if (dataset_of(f.name) or ("", ""))[0] == name and f.name not in (file,)]:
                await cluster.bridge.files.remove(f"{directory}/{other.name}")  # the same name in another format
        return Entry(name, size, None, f"datasets/{file}", fmt, about.get("sample_count"), about.get("dimensions"))

    async def dataset_known(self, caller: Principal, namespace: str, name: str) -> bool:
        """Whether a training run of `namespace` can use this dataset."""
        if builtin_dataset(name):
            return True
        try:
            checked_name(name, "dataset name")
        except InvalidName:
            return False
        cluster = await self._cluster()
        with _storage_words():
            files = await cluster.bridge.files.list(datasets_dir(cluster.spec.storage, namespace))
        return any((dataset_of(f.name) or ("", ""))[0] == name for f in files)

    async def disk(self, caller: Principal) -> DiskUsage:
        """Total and free space of the filesystem the tenant's area is on."""
        cluster = await self._cluster()
        with _storage_words():
            return await cluster.bridge.files.disk_usage(tenant_area(cluster.spec.storage, caller.tenant))

    @staticmethod
    def upload_limit(cluster: Cluster) -> int:
        return cluster.spec.storage.max_upload_megabytes * MIB

    def _check_declared(self, cluster: Cluster, declared: int | None) -> None:
        """A request whose whole body is far over the limit is refused before a byte of it is read."""
        if declared is not None and declared > self.upload_limit(cluster) + MIB:
            raise TooLarge(self.upload_limit(cluster))


def _details(text: str | None) -> dict:
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def digits_entry() -> Entry:
    """The built-in dataset: scikit-learn's digits (1,797 images of 8x8 pixels, 10 classes)."""
    size, modified, where = 0, None, "builtin:digits"
    spec = importlib.util.find_spec("sklearn")
    if spec and spec.origin:
        data = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if data.exists():
            size, modified, where = data.stat().st_size, data.stat().st_mtime, "builtin:sklearn/datasets/data/digits.csv.gz"
    return Entry("digits", size, modified, where, "images", 1797, "8x8")


class DatasetDetails:
    """Sample count and dimensions of an uploaded dataset, learnt from its bytes as they stream past (nothing is
    kept but the first 64 KiB and a count)."""

    HEAD = 64 * 1024

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.head = b""
        self.lines = 0
        self.last = b"\n"

    async def watch(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if len(self.head) < self.HEAD:
                self.head += chunk[: self.HEAD - len(self.head)]
            if chunk:
                self.lines += chunk.count(b"\n")
                self.last = chunk[-1:]
            yield chunk

    def result(self) -> dict:
        try:
            return self._csv() if self.fmt == "csv" else self._npz()
        except (ValueError, SyntaxError, struct.error, zlib.error, IndexError):
            return {"format": self.fmt}

    def _csv(self) -> dict:
        rows = self.lines + (0 if self.last == b"\n" else 1)
        first = self.head.split(b"\n", 1)[0].decode(errors="replace").strip()
        cells = first.split(",")
        try:
            [float(c) for c in cells]
        except ValueError:
            rows -= 1  # a header
        return {"format": "csv", "sample_count": max(rows, 0), "dimensions": str(len(cells) - 1)}

    def _npz(self) -> dict:
        head = self.head
        if head[:4] != b"PK\x03\x04":
            raise ValueError("not a zip file")
        method, = struct.unpack_from("<H", head, 8)
        name_len, extra_len = struct.unpack_from("<HH", head, 26)
        data = head[30 + name_len + extra_len:]
        if method == 8:
            data = zlib.decompressobj(-15).decompress(data, 4096)
        if data[:6] != b"\x93NUMPY":
            raise ValueError("not a .npy member")
        if data[6] == 1:
            length, = struct.unpack_from("<H", data, 8)
            header = data[10:10 + length]
        else:
            length, = struct.unpack_from("<I", data, 8)
            header = data[12:12 + length]
        shape = ast.literal_eval(header.decode("latin1"))["shape"]
        return {"format": "npz", "sample_count": int(shape[0]) if shape else 1,
                "dimensions": "x".join(str(d) for d in shape[1:]) or "1"}
