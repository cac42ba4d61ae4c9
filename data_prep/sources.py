"""Which files make up the corpus, in a fixed order, and how each one holds its documents.

`data.input` is a file, a directory tree or a glob; unset, it is this Python's standard library
`*.py` sources (a real ~30 MB corpus that is always there, so `make data` works offline). Files
are sorted by path so the document order, hence every shard, depends only on the input.
"""
from __future__ import annotations

import glob
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

TEXT, JSONL, JSONL_GZ, PARQUET = "text", "jsonl", "jsonl.gz", "parquet"
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class SourceFile:
    path: str  # as the user would name it (input joined with the relative path)
    relpath: str  # relative to the input root: the stable part of every document id
    kind: str


@dataclass(frozen=True)
class Corpus:
    description: str  # the resolved input, for the manifest and messages
    files: list[SourceFile]


def kind_of(path: str) -> str:
    name = path.lower()
    if name.endswith((".jsonl.gz", ".json.gz", ".ndjson.gz")):
        return JSONL_GZ
    if name.endswith((".jsonl", ".ndjson")):
        return JSONL
    if name.endswith((".parquet", ".pq")):
        return PARQUET
    return TEXT


def _walk(root: Path, suffix: str | None) -> list[Path]:
    """Every regular file under root (hidden entries and package caches left out), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS)
        for name in filenames:
            if name.startswith(".") or (suffix and not name.endswith(suffix)):
                continue
            p = Path(dirpath, name)
            if p.is_file():
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _files_under(root: Path, suffix: str | None) -> list[SourceFile]:
    return [SourceFile(str(p), p.relative_to(root).as_posix(), kind_of(p.name))
            for p in _walk(root, suffix)]


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard: ids are relative to it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def find_corpus(input_spec: str | None) -> Corpus:
    """Resolve data.input to its sorted source files; a missing path is a UserError."""
    if input_spec is None:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return Corpus(f"{stdlib}/**/*.py (the Python standard library)", _files_under(stdlib, ".py"))
    if glob.has_magic(input_spec):
        root = _glob_root(input_spec)
        matches = {p for p in glob.glob(input_spec, recursive=True) if Path(p).is_file()}
        if not matches:
            raise UserError(f"data.input={input_spec!r}: the glob matches no files")
        files = [SourceFile(p, Path(p).relative_to(root).as_posix(), kind_of(p)) for p in matches]
        return Corpus(input_spec, sorted(files, key=lambda f: f.relpath))
    path = Path(input_spec)
    if path.is_dir():
        files = _files_under(path, None)
        if not files:
            raise UserError(f"data.input={input_spec!r}: the directory holds no files")
        return Corpus(input_spec, files)
    if path.is_file():
        return Corpus(input_spec, [SourceFile(input_spec, path.name, kind_of(path.name))])
    raise UserError(f"data.input={input_spec!r}: no such file or directory")
