"""Storage through fsspec: local folders and URLs (``s3://``, ``gs://``, ...).

Every function takes a ``Storage`` (a filesystem plus a root path in that filesystem's terms).
For S3, s3fs/botocore read the endpoint from ``AWS_ENDPOINT_URL`` (and credentials from the
usual ``AWS_*`` variables) themselves. Every call goes through ``call_with_retries``: transient
faults (connection errors, throttling, 5xx) are retried with backoff as the ``RetryPolicy``
says, and what still fails is a ``StorageError`` naming the path (or, for a missing file or a
refused permission, the ``OSError`` that says so).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ember.errors import StorageError
from ember.train._retry import RetryPolicy, call_with_retries

T = TypeVar("T")
CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    """One file of a rank's checkpoint shard: path relative to the rank folder."""

    path: str
    size: int
    sha256: str


class Storage:
    """A place in a filesystem: ``Storage("s3://bucket/runs")``, ``Storage("/tmp/runs")``.

    ``retry`` says how long calls ride out transient faults (``RetryPolicy()``: a minute).
    """

    def __init__(self, url: str, retry: RetryPolicy | None = None) -> None:
        import fsspec

        if "://" not in url:
            url = os.path.abspath(os.path.expanduser(url))
        self.url = url.rstrip("/") or "/"
        self.retry = retry if retry is not None else RetryPolicy()
        self.fs: Any
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = "file" in _protocols(self.fs)

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Storage, (self.url, self.retry))

    def child(self, *parts: str) -> Storage:
        return Storage(self.url_of(*parts), self.retry)

    def url_of(self, *parts: str) -> str:
        """The URL (or local path) of ``parts`` inside this storage, for messages and children."""
        if not parts:
            return self.url
        if "://" in self.url:
            return "/".join([self.url, *parts])
        return os.path.join(self.url, *parts)

    def path(self, *parts: str) -> str:
        """A path inside this storage, in the filesystem's own terms."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, what, self.retry, before_retry=self.fs.invalidate_cache)

    def exists(self, *parts: str) -> bool:
        def exists() -> bool:
            self.fs.invalidate_cache()
            return bool(self.fs.exists(self.path(*parts)))

        return self._call(f"checking {self.url_of(*parts)!r}", exists)

    def read_bytes(self, *parts: str) -> bytes:
        def read() -> bytes:
            data: bytes = self.fs.cat_file(self.path(*parts))
            return data

        return self._call(f"reading {self.url_of(*parts)!r}", read)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        target = self.path(*parts)

        def write() -> None:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            self.fs.pipe_file(target, data)

        self._call(f"writing {self.url_of(*parts)!r}", write)

    def remove(self, *parts: str) -> None:
        target = self.path(*parts)

        def remove() -> None:
            self.fs.invalidate_cache()
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            self.fs.invalidate_cache()

        self._call(f"deleting {self.url_of(*parts)!r}", remove)

    def listdir(self, *parts: str) -> list[str]:
        """Names directly inside a folder (empty when it does not exist)."""
        def listdir() -> list[str]:
            self.fs.invalidate_cache()
            try:
                entries = self.fs.ls(self.path(*parts), detail=False)
            except FileNotFoundError:
                return []
            return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

        return self._call(f"listing {self.url_of(*parts)!r}", listdir)

    def find(self, *parts: str) -> dict[str, int]:
        """Every file under a folder: path relative to it -> size."""
        return self._call(f"listing {self.url_of(*parts)!r}", lambda: self._find(*parts))

    def _find(self, *parts: str) -> dict[str, int]:
        base = self.path(*parts)
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        base_prefix = base.rstrip("/") + "/"
        out: dict[str, int] = {}
        for name, info in found.items():
            if info.get("type") == "directory":
                continue
            rel = str(name)[len(base_prefix):] if str(name).startswith(base_prefix) else str(name)
            out[rel] = int(info.get("size") or 0)
        return out

    def check_writable(self) -> None:
        """Write, read back and delete a probe file; raise ``StorageError`` naming the cause."""
        probe = f".ember_write_probe_{uuid.uuid4().hex}"
        try:
            self.write_bytes(b"ok", probe)
            if self.read_bytes(probe) != b"ok":
                raise OSError("a file read back differs from what was written")
            self.remove(probe)
        except Exception as exc:
            raise StorageError(
                f"cannot write to the storage path {self.url!r}: {type(exc).__name__}: {exc}. "
                "Check that it exists and is writable (for S3: the bucket, credentials and "
                "AWS_ENDPOINT_URL)"
            ) from exc

    def upload_directory(self, local_dir: str, *parts: str) -> list[FileEntry]:
        """Copy a local folder's files to ``parts``; returns what was written, with checksums."""
        entries: list[FileEntry] = []
        for rel in _walk(local_dir):
            def upload(rel: str = rel) -> FileEntry:
                with open(os.path.join(local_dir, rel), "rb") as src:
                    return self._write_chunks(iter(lambda: src.read(CHUNK), b""), rel, *parts)

            entries.append(self._call(f"uploading {rel!r} to {self.url_of(*parts)!r}", upload))
        return entries

    def write_buffer(self, data: Any, rel: str, *parts: str) -> FileEntry:
        """Write a bytes-like object as the file ``rel`` under ``parts``, in parts of CHUNK."""
        view = memoryview(data).cast("B")
        return self._call(
            f"uploading {rel!r} to {self.url_of(*parts)!r}",
            lambda: self._write_chunks(
                (view[i:i + CHUNK] for i in range(0, len(view), CHUNK)), rel, *parts))

    def _write_chunks(self, chunks: Any, rel: str, *parts: str) -> FileEntry:
        target = posixpath.join(self.path(*parts), rel)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        # block_size: s3fs buffers a whole block (50 MB by default) before each part upload;
        # one CHUNK per part keeps memory flat however large the file is.
        with self.fs.open(target, "wb", block_size=CHUNK) as dst:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        return FileEntry(rel, size, digest.hexdigest())

    def download_directory(self, local_dir: str, *parts: str,
                           files: list[str] | None = None) -> None:
        """Copy the files under ``parts`` (or only ``files``, relative paths) to ``local_dir``."""
        names = files if files is not None else sorted(self.find(*parts))
        base = self.path(*parts)
        for rel in names:
            target = os.path.join(local_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)

            def download(rel: str = rel, target: str = target) -> None:
                self.fs.get_file(posixpath.join(base, rel), target)

            self._call(f"downloading {self.url_of(*parts, *rel.split('/'))!r}", download)


def _walk(local_dir: str) -> list[str]:
    out = []
    for folder, _dirs, names in os.walk(local_dir):
        for name in names:
            full = os.path.join(folder, name)
            out.append(os.path.relpath(full, local_dir).replace(os.sep, "/"))
    return sorted(out)


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
