"""DeepSpeed's shared-memory all-reduce buffers, removed as soon as every rank has mapped them.

When all ranks of a CPU run are on one node (LOCAL_SIZE == WORLD_SIZE, as the deepspeed launcher
sets it), `deepspeed.init_distributed` has each rank create
`/dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>` (about 66 MB) and
map every peer's; DeepSpeed never unlinks them. A mapping outlives its name, so once every rank is
past initialisation (a barrier) each rank unlinks its own: nothing is left on any exit path, kill -9
included. A run killed during initialisation can still leave one; so each rank first notes its
buffer's name in a per-user ledger, and a later start removes the ledger's buffers whose port no
process listens on and that no live process maps. Buffers not in the ledger are never touched.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

SHM = Path("/dev/shm")
PREFIX = "deepspeed_allreduce_buffer"


def buffer_name(rank: int, env=os.environ) -> str:
    """The name DeepSpeed's shm_initialize gives this rank's buffer (ops/csrc/cpu/comm/shm.cpp)."""
    return f"{PREFIX}_{os.getuid()}_{env.get('MASTER_ADDR', '')}_{env.get('MASTER_PORT', '')}_{rank}"


def created_by_deepspeed(backend: str, env=os.environ) -> bool:
    """DeepSpeed's CPU accelerator (gloo) makes them when every rank is local (shm_interface.cpp)."""
    local = env.get("LOCAL_SIZE")
    return backend == "gloo" and bool(local) and local == env.get("WORLD_SIZE")


def ledger_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"goldfinch-shm-{os.getuid()}"


def record(name: str) -> None:
    """Note a buffer this process is about to make DeepSpeed create."""
    ledger_dir().mkdir(mode=0o700, exist_ok=True)
    (ledger_dir() / name).touch()


def release(name: str) -> None:
    """Unlink the buffer (every rank must have mapped it) and forget it."""
    (SHM / name).unlink(missing_ok=True)
    (ledger_dir() / name).unlink(missing_ok=True)


def port_of(name: str) -> int | None:
    parts = name.rsplit("_", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def port_in_use(port: int) -> bool:
    """True when a process listens on the port (SO_REUSEADDR: a closed socket's TIME_WAIT is not use)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def mapped_names() -> set[str]:
    """Names under /dev/shm that a live process of ours maps (others' maps are unreadable)."""
    names = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # gone, or another user's process
            continue
        names.update(line.rsplit("/", 1)[-1].removesuffix(" (deleted)")
                     for line in text.splitlines() if f"{SHM}/{PREFIX}" in line)
    return names


def remove_stale(keep_port: int | None = None) -> list[str]:
    """Unlink the ledger's buffers whose port is free and that nobody maps; returns their names.
    `keep_port`: this run's port, whose buffers the run itself recreates and releases."""
    if not ledger_dir().is_dir():
        return []
    entries = [p for p in ledger_dir().iterdir() if p.name.startswith(f"{PREFIX}_{os.getuid()}_")]
    stale = [p for p in entries
             if port_of(p.name) not in (None, keep_port) and not port_in_use(port_of(p.name))]
    if not stale:
        return []
    mapped = mapped_names()
    removed = []
    for entry in stale:
        if entry.name not in mapped:
            (SHM / entry.name).unlink(missing_ok=True)
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed
