"""Files appear complete or not at all: written under a temporary name, then renamed.

Temporary names carry the pid and a random part so that two writers of the same file (a retried
Ray task next to a straggler) never share one; leftovers of a killed run end in `.partial` and are
removed by the next run.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def partial_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")


def write_bytes(final: Path, data: bytes) -> None:
    tmp = partial_name(final)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def remove_partials(folder: Path) -> int:
    """Delete leftovers of interrupted writes in folder; returns how many."""
    count = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX) and p.is_file():
                p.unlink(missing_ok=True)
                count += 1
    return count
