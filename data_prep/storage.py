"""The one filesystem layer: local paths and fsspec URLs, for data_prep's writes and the trainer's reads.

A location is a path or an fsspec URL (`s3://bucket/dir`, `gs://...`); credentials and endpoints
come from the standard environment (AWS_ENDPOINT_URL, ...). A `file://` URL is a local path, read
through fsspec's local filesystem: not remote (no retries, no credentials forwarded, written by
rename like any local file). Local files are written under a temporary name and renamed; on object
storage a PUT is already all-or-nothing, and shards are first written under a staging key and
copied to their final key only once every shard exists. Object stores fail transiently, so the
trainer's whole-file reads of remote files are retried with backoff.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

PARTIAL_SUFFIX = ".partial"
# forwarded to Ray tasks when input or output is remote, so workers reach the same store
CREDENTIAL_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_", "FSSPEC_")
BACKOFF_S = 0.5  # before the first retry of a remote read; doubled each time


def is_remote(url) -> bool:
    """An fsspec URL other than `file://` (object storage, HTTP, ...)."""
    url = str(url) if url else ""
    return "://" in url and not url.startswith("file://")


def local_path(path) -> Path:
    """A local path or `file://` URL as a plain Path (fsspec's local filesystem strips the scheme)."""
    return Path(filesystem(str(path))[1]) if str(path).startswith("file://") else Path(path)


def location(path) -> Path | str:
    """What a reader holds: a Path for anything local, the URL string for remote storage."""
    return str(path) if is_remote(path) else local_path(path)


def credential_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(CREDENTIAL_PREFIXES)}


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a local path or URL; one-line error if unusable."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise UserError(f"{url}: cannot open this location ({str(err).splitlines()[0]})") from None


def join(base, name: str) -> Path | str:
    """`base/name`: a Path for a local base, a URL string for a remote one."""
    if is_remote(base):
        return str(base).rstrip("/") + "/" + name
    return local_path(base) / name


def parent(path) -> str:
    return str(path).rsplit("/", 1)[0] if is_remote(path) else str(local_path(path).parent)


def read_bytes(path, retries: int = 3) -> bytes:
    """The whole file; a remote one is retried `retries` times on I/O errors (FileNotFoundError
    is final). Local files keep plain file calls (no fsspec in the hot path)."""
    if not is_remote(path):
        return local_path(path).read_bytes()
    for attempt in range(retries + 1):
        try:
            fs, root = filesystem(str(path))
            return fs.cat_file(root)
        except FileNotFoundError:
            raise
        except OSError:
            if attempt == retries:
                raise
            time.sleep(BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")


def is_dir(path) -> bool:
    if not is_remote(path):
        return local_path(path).is_dir()
    fs, root = filesystem(str(path))
    return fs.isdir(root)


def file_sizes(directory) -> dict[str, int]:
    """{name: bytes} of the files directly in `directory`, in one listing when remote."""
    if not is_remote(directory):
        return {p.name: p.stat().st_size for p in local_path(directory).iterdir() if p.is_file()}
    fs, root = filesystem(str(directory))
    return {info["name"].rstrip("/").rsplit("/", 1)[-1]: int(info["size"])
            for info in fs.ls(root, detail=True) if info.get("type") == "file"}


class Store:
    """Files under one root, addressed by names relative to it ('a/b.tar')."""

    def __init__(self, root: str):
        from fsspec.implementations.local import LocalFileSystem

        self.root = str(root).rstrip("/") or str(root)
        self.fs, self.base = filesystem(self.root)
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, name: str = "") -> str:
        return f"{self.base}/{name}" if name else self.base

    def url(self, name: str = "") -> str:
        """The location as users name it, for messages and the manifest."""
        return f"{self.root}/{name}" if name else self.root

    def exists(self) -> bool:
        return self.fs.exists(self.base)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.base) if self.local else True

    def makedirs(self) -> None:
        if self.local:
            os.makedirs(self.base, exist_ok=True)

    def names(self) -> list[str]:
        """Entries directly under the root (names only)."""
        if self.local:
            return sorted(os.listdir(self.base)) if os.path.isdir(self.base) else []
        self.fs.invalidate_cache()
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.base, detail=False))
        except FileNotFoundError:
            return []

    def size(self, name: str) -> int | None:
        try:
            if self.local:
                return os.stat(self.path(name)).st_size
            self.fs.invalidate_cache(self.path(name))
            return int(self.fs.size(self.path(name)))
        except (FileNotFoundError, OSError):
            return None

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(name))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def sha256(self, name: str) -> str | None:
        h = hashlib.sha256()
        try:
            with self.fs.open(self.path(name), "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return h.hexdigest()

    def write_bytes(self, name: str, data: bytes) -> None:
        """The file appears complete or not at all."""
        if not self.local:
            self.fs.pipe_file(self.path(name), data)
            return
        final = Path(self.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def writer(self, name: str):
        """A file to stream into (local: a temporary name renamed at the end; object storage: a
        multipart upload completed only if the block ends without an error)."""
        if not self.local:
            f = self.fs.open(self.path(name), "wb")
            try:
                yield f
            except BaseException:
                f.discard()
                raise
            f.close()
            return
        final = Path(self.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def publish(self, src: str, dst: str) -> None:
        """Make dst a copy of src, atomically; src stays (a hard link where the filesystem has them)."""
        if not self.local:
            self.fs.copy(self.path(src), self.path(dst))
            return
        final = Path(self.path(dst))
        tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        try:
            try:
                os.link(self.path(src), tmp)
            except OSError:
                shutil.copyfile(self.path(src), tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        try:
            if self.local:
                os.unlink(self.path(name))
            else:
                self.fs.rm_file(self.path(name))
        except FileNotFoundError:
            pass

    def remove_tree(self, name: str) -> None:
        try:
            if self.local:
                shutil.rmtree(self.path(name))
            else:
                self.fs.rm(self.path(name), recursive=True)
        except FileNotFoundError:
            pass

    def remove_partials(self, folder: str = "") -> None:
        """Leftovers of local writes a killed run cut off."""
        if not self.local or not os.path.isdir(self.path(folder)):
            return
        for entry in os.scandir(self.path(folder)):
            if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX) and entry.is_file():
                os.unlink(entry.path)
