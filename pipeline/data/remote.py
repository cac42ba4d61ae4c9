"""Local paths and fsspec URLs (`s3://`, `gs://`, ...) behind one small interface.

Local paths keep the plain file system calls (no fsspec in the hot path); URLs go through fsspec,
whose credentials and endpoints come from the standard environment. Object stores fail
transiently, so whole-object reads are retried with backoff before an error is raised.
"""
from __future__ import annotations

import time
from pathlib import Path

BACKOFF_S = 0.5


def is_url(path) -> bool:
    return "://" in str(path)


def join(base, name: str):
    """`base/name` for a Path or a URL (a Path stays a Path)."""
    if is_url(base):
        return str(base).rstrip("/") + "/" + name
    return Path(base) / name


def parent(path) -> str:
    return str(path).rsplit("/", 1)[0] if is_url(path) else str(Path(path).parent)


def _fs(url: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root


def read_bytes(path, retries: int = 3) -> bytes:
    """The whole file; a URL is retried `retries` times on I/O errors (FileNotFoundError is final)."""
    if not is_url(path):
        return Path(path).read_bytes()
    for attempt in range(retries + 1):
        try:
            fs, root = _fs(str(path))
            return fs.cat_file(root)
        except FileNotFoundError:
            raise
        except OSError:
            if attempt == retries:
                raise
            time.sleep(BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")


def is_dir(path) -> bool:
    if not is_url(path):
        return Path(path).is_dir()
    fs, root = _fs(str(path))
    return fs.isdir(root)


def file_sizes(directory) -> dict[str, int]:
    """{name: bytes} of the files directly in `directory`, in one listing for a URL."""
    if not is_url(directory):
        return {p.name: p.stat().st_size for p in Path(directory).iterdir() if p.is_file()}
    fs, root = _fs(str(directory))
    return {info["name"].rstrip("/").rsplit("/", 1)[-1]: int(info["size"])
            for info in fs.ls(root, detail=True) if info.get("type") == "file"}
