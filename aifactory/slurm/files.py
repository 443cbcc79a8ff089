"""Files on a cluster's shared storage, read and written in chunks: from this side's filesystem, or with SFTP over
the cluster's one SSH connection. One implementation per transport, like the log readers beside it.

A write goes to a hidden partial name in the same directory and is renamed into place only when complete, so a
failed or refused write leaves nothing under the final name (and no partial file either).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Protocol

import asyncssh

from aifactory.slurm.errors import SlurmUnreachable
from aifactory.storage import partial_name

if TYPE_CHECKING:
    from aifactory.slurm.ssh import SshConnection

CHUNK = 1 << 20  # 1 MiB: what a read yields at a time and what the API streams on


class FilesUnavailable(Exception):
    """This side cannot reach the cluster's files (no shared filesystem here and no SSH)."""


class TooLarge(Exception):
    """A write brought more bytes than its limit; nothing was kept."""

    def __init__(self, limit: int):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    modified: float  # Unix seconds
    is_dir: bool = False


@dataclass(frozen=True)
class DiskUsage:
    total: int
    free: int


class ClusterFiles(Protocol):
    async def stat(self, path: str) -> FileInfo | None: ...

    async def list(self, directory: str) -> list[FileInfo]: ...

    def read(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]: ...

    async def read_text(self, path: str) -> str | None: ...

    async def write(self, path: str, chunks: AsyncIterable[bytes], limit: int | None = None) -> int: ...

    async def remove(self, path: str) -> bool: ...

    async def disk_usage(self, path: str) -> DiskUsage: ...


async def _limited(chunks: AsyncIterable[bytes], limit: int | None) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if limit is not None and total > limit:
            raise TooLarge(limit)
        yield chunk


class NoFiles:
    """A cluster whose files this side cannot reach."""

    WHY = "the cluster's files are not reachable from here (its SlurmCluster has neither localLogs nor ssh)"

    async def stat(self, path: str) -> FileInfo | None:
        raise FilesUnavailable(self.WHY)

    async def list(self, directory: str) -> list[FileInfo]:
        raise FilesUnavailable(self.WHY)

    async def read(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        raise FilesUnavailable(self.WHY)
        yield b""  # pragma: no cover

    async def read_text(self, path: str) -> str | None:
        raise FilesUnavailable(self.WHY)

    async def write(self, path: str, chunks: AsyncIterable[bytes], limit: int | None = None) -> int:
        raise FilesUnavailable(self.WHY)

    async def remove(self, path: str) -> bool:
        raise FilesUnavailable(self.WHY)

    async def disk_usage(self, path: str) -> DiskUsage:
        raise FilesUnavailable(self.WHY)


class LocalFiles:
    """The cluster's storage is mounted on this side (shared filesystem, the local stack). Blocking calls run in
    threads, one chunk at a time."""

    async def stat(self, path: str) -> FileInfo | None:
        try:
            st = await asyncio.to_thread(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileInfo(os.path.basename(path), st.st_size, st.st_mtime, os.path.isdir(path))

    async def list(self, directory: str) -> list[FileInfo]:
        def scan() -> list[FileInfo]:
            try:
                with os.scandir(directory) as entries:
                    out = []
                    for entry in entries:
                        try:
                            st = entry.stat()
                        except FileNotFoundError:
                            continue  # removed while listing
                        out.append(FileInfo(entry.name, st.st_size, st.st_mtime, entry.is_dir()))
                    return out
            except FileNotFoundError:
                return []
        return await asyncio.to_thread(scan)

    async def read(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while data := await asyncio.to_thread(f.read, chunk):
                yield data
        finally:
            f.close()

    async def read_text(self, path: str) -> str | None:
        def read() -> str | None:
            try:
                with open(path, errors="replace") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        return await asyncio.to_thread(read)

    async def write(self, path: str, chunks: AsyncIterable[bytes], limit: int | None = None) -> int:
        await asyncio.to_thread(os.makedirs, os.path.dirname(path), exist_ok=True)
        partial = partial_name(path, secrets.token_hex(4))
        f = await asyncio.to_thread(open, partial, "xb")
        written = 0
        try:
            try:
                async for chunk in _limited(chunks, limit):
                    await asyncio.to_thread(f.write, chunk)
                    written += len(chunk)
            finally:
                f.close()
            await asyncio.to_thread(os.replace, partial, path)
        except BaseException:
            await asyncio.to_thread(_unlink, partial)
            raise
        return written

    async def remove(self, path: str) -> bool:
        def rm() -> bool:
            try:
                os.unlink(path)
                return True
            except FileNotFoundError:
                return False
        return await asyncio.to_thread(rm)

    async def disk_usage(self, path: str) -> DiskUsage:
        def usage() -> DiskUsage:
            target = path
            while not os.path.exists(target) and target not in ("", "/"):
                target = os.path.dirname(target)  # the area may not exist yet: its filesystem does
            got = shutil.disk_usage(target or "/")
            return DiskUsage(got.total, got.free)
        return await asyncio.to_thread(usage)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SftpFiles:
    """The cluster's storage as the login node sees it, through SFTP on the shared SSH connection (sshd's sftp
    subsystem; OpenSSH's posix-rename and statvfs extensions where the server has them)."""

    def __init__(self, ssh: "SshConnection"):
        self.ssh = ssh

    async def _sftp(self) -> asyncssh.SFTPClient:
        conn = await self.ssh.connection()
        try:
            return await conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            raise SlurmUnreachable(f"SFTP to {self.ssh.target.where} failed: {exc}") from None

    async def stat(self, path: str) -> FileInfo | None:
        async with await self._sftp() as sftp:
            try:
                attrs = await sftp.stat(path)
            except asyncssh.SFTPNoSuchFile:
                return None
            return FileInfo(PurePosixPath(path).name, attrs.size or 0, float(attrs.mtime or 0),
                            attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY)

    async def list(self, directory: str) -> list[FileInfo]:
        async with await self._sftp() as sftp:
            try:
                names = await sftp.readdir(directory)
            except asyncssh.SFTPNoSuchFile:
                return []
            return [FileInfo(str(n.filename), n.attrs.size or 0, float(n.attrs.mtime or 0),
                             n.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY)
                    for n in names if str(n.filename) not in (".", "..")]

    async def read(self, path: str, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        async with await self._sftp() as sftp:
            async with sftp.open(path, "rb") as f:
                while data := await f.read(chunk):
                    yield data

    async def read_text(self, path: str) -> str | None:
        try:
            return b"".join([c async for c in self.read(path)]).decode(errors="replace")
        except asyncssh.SFTPNoSuchFile:
            return None

    async def write(self, path: str, chunks: AsyncIterable[bytes], limit: int | None = None) -> int:
        partial = partial_name(path, secrets.token_hex(4))
        async with await self._sftp() as sftp:
            await sftp.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
            written = 0
            try:
                async with sftp.open(partial, "wb") as f:
                    async for chunk in _limited(chunks, limit):
                        await f.write(chunk)
                        written += len(chunk)
                try:
                    await sftp.posix_rename(partial, path)  # replaces an old entry atomically
                except asyncssh.SFTPOpUnsupported:
                    await _remove(sftp, path)
                    await sftp.rename(partial, path)
            except BaseException:
                await asyncio.shield(_remove(sftp, partial))
                raise
        return written

    async def remove(self, path: str) -> bool:
        async with await self._sftp() as sftp:
            return await _remove(sftp, path)

    async def disk_usage(self, path: str) -> DiskUsage:
        async with await self._sftp() as sftp:
            target = PurePosixPath(path)
            while True:
                try:
                    got = await sftp.statvfs(str(target))
                    return DiskUsage(got.blocks * got.frsize, got.bavail * got.frsize)
                except asyncssh.SFTPNoSuchFile:
                    if target == target.parent:
                        raise
                    target = target.parent


async def _remove(sftp: asyncssh.SFTPClient, path: str) -> bool:
    try:
        await sftp.remove(path)
        return True
    except asyncssh.SFTPNoSuchFile:
        return False
