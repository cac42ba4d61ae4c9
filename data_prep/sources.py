"""Which files make up the corpus, in a fixed order, with their sizes: the only listing the driver
does (its cost grows with the number of files, never with the number of documents).

`data.input` is a file, a directory tree, a glob or a binidx corpus (`name.bin`, `name.idx` or the
prefix `name`), each a local path or an fsspec URL; unset, it is this Python's standard library
`*.py` sources (a real ~30 MB corpus that is always there, so `make data` works offline). Files
are sorted by their path relative to the input root, so the document order depends only on the input.
"""
from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass

from .errors import UserError
from .storage import filesystem

TEXT, JSONL, JSONL_GZ, PARQUET, BINIDX = "text", "jsonl", "jsonl.gz", "parquet", "binidx"
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class SourceFile:
    path: str  # as the user would name it (input joined with the relative path)
    relpath: str  # relative to the input root: the stable part of every document id
    kind: str
    size: int  # bytes (binidx: of the .bin)


@dataclass(frozen=True)
class Corpus:
    description: str  # the resolved input, for the manifest and messages
    files: list[SourceFile]

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)


def kind_of(path: str) -> str:
    name = path.lower()
    if name.endswith((".jsonl.gz", ".json.gz", ".ndjson.gz")):
        return JSONL_GZ
    if name.endswith((".jsonl", ".ndjson")):
        return JSONL
    if name.endswith((".parquet", ".pq")):
        return PARQUET
    return TEXT


def _visible(rel: str) -> bool:
    parts = rel.split("/")
    return not any(p.startswith(".") for p in parts) and not any(p in _SKIPPED_DIRS for p in parts[:-1])


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}"


def _local_files(base: str):
    """(relative path, size) of the regular files under a local directory, skipping the folders
    `_visible` rejects instead of listing them (the standard library's site-packages can hold far
    more than the library). Symbolic links are neither followed nor listed, as in fsspec's find."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(f"{base}/{rel_dir}" if rel_dir else base) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith(".") and entry.name not in _SKIPPED_DIRS:
                        stack.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    yield rel, entry.stat(follow_symlinks=False).st_size


def _found(fs, base: str):
    """(relative path, size) of every file under base."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem) and os.path.isdir(base):
        yield from _local_files(base.rstrip("/") or "/")
        return
    for p, info in fs.find(base, detail=True).items():
        if info.get("type") == "file":
            yield (p[len(base.rstrip("/")) + 1:] if p != base else p.rsplit("/", 1)[-1]), int(info.get("size") or 0)


def _under(spec: str, fs, base: str, suffix: str | None) -> list[SourceFile]:
    files = [SourceFile(_join(spec, rel), rel, kind_of(rel), size) for rel, size in _found(fs, base)
             if _visible(rel) and not (suffix and not rel.endswith(suffix))]
    return sorted(files, key=lambda f: f.relpath)


def _glob_root(pattern: str) -> str:
    """The part of a glob before its first wildcard's directory: ids are relative to it."""
    cut = min(i for i, c in enumerate(pattern) if c in "*?[")
    return pattern[:cut].rsplit("/", 1)[0] if "/" in pattern[:cut] else ""


def _binidx(spec: str, fs, path: str) -> Corpus | None:
    for suffix in (".bin", ".idx"):
        if path.endswith(suffix):
            prefix, shown = path[: -len(suffix)], spec[: -len(suffix)]
            break
    else:
        prefix, shown = path, spec
        if not (fs.isfile(prefix + ".bin") and fs.isfile(prefix + ".idx")):
            return None
    if not fs.isfile(prefix + ".bin") or not fs.isfile(prefix + ".idx"):
        missing = shown + (".idx" if fs.isfile(prefix + ".bin") else ".bin")
        raise UserError(f"data.input={spec!r}: {missing} is missing (a binidx corpus needs both .bin and .idx)")
    name = prefix.rsplit("/", 1)[-1]
    return Corpus(f"{shown}.bin + .idx (binidx)",
                  [SourceFile(shown, name, BINIDX, int(fs.size(prefix + ".bin")))])


def find_corpus(spec: str | None) -> Corpus:
    """Resolve data.input to its sorted source files; a missing path is a UserError."""
    if spec is None:
        stdlib = sysconfig.get_paths()["stdlib"]
        fs, base = filesystem(stdlib)
        return Corpus(f"{stdlib}/**/*.py (the Python standard library)", _under(stdlib, fs, base, ".py"))
    fs, path = filesystem(spec)
    if any(c in spec for c in "*?["):
        root = _glob_root(spec)
        fs_root = filesystem(root or ".")[1]
        matches = fs.glob(path, detail=True)
        files = [SourceFile(p if "://" not in spec else fs.unstrip_protocol(p),
                            p[len(fs_root.rstrip("/")) + 1:], kind_of(p), int(info.get("size") or 0))
                 for p, info in matches.items() if info.get("type") == "file"]
        if not files:
            raise UserError(f"data.input={spec!r}: the glob matches no files")
        return Corpus(spec, sorted(files, key=lambda f: f.relpath))
    found = _binidx(spec, fs, path)
    if found is not None:
        return found
    if fs.isdir(path):
        files = _under(spec, fs, path, None)
        if not files:
            raise UserError(f"data.input={spec!r}: the directory holds no files")
        return Corpus(spec, files)
    if fs.isfile(path):
        name = path.rsplit("/", 1)[-1]
        return Corpus(spec, [SourceFile(spec, name, kind_of(name), int(fs.size(path)))])
    raise UserError(f"data.input={spec!r}: no such file or directory")
