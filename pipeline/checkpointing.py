"""DeepSpeed checkpoints with a `latest` pointer that only moves once every rank has finished.

Layout under runs/<name>/checkpoints/:
    step00000100/            DeepSpeed files (model, optimizer shards) + rank<R>.pt (loader, RNG)
    step00000100/COMPLETE    written by rank 0 after a barrier: the checkpoint is whole
    latest                   the tag of the newest complete checkpoint (replaced atomically)
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

COMPLETE = "COMPLETE"
LATEST = "latest"


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    version, keys, *rest = state["python"]
    random.setstate((version, tuple(keys), *rest))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Complete checkpoints, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.name for p in ckpt_dir.iterdir() if (p / COMPLETE).is_file())


def save(engine, ckpt_dir: Path, step: int, client_state: dict, rank_state: dict, rank: int,
         keep_last: int) -> str:
    """Save on every rank; mark complete and move `latest` only after all ranks wrote."""
    tag = tag_for(step)
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    torch.save(rank_state, ckpt_dir / tag / f"rank{rank}.pt")
    torch.distributed.barrier()
    if rank == 0:
        _write_atomic(ckpt_dir / tag / COMPLETE, f"{step}\n")
        _write_atomic(ckpt_dir / LATEST, tag + "\n")
        for old in complete_tags(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    torch.distributed.barrier()
    return tag


def find_resume_tag(ckpt_dir: Path) -> str | None:
    """The tag named by `latest` when complete, else the newest complete one."""
    latest = ckpt_dir / LATEST
    if latest.is_file():
        tag = latest.read_text().strip()
        if (ckpt_dir / tag / COMPLETE).is_file():
            return tag
    tags = complete_tags(ckpt_dir)
    return tags[-1] if tags else None


def load(engine, ckpt_dir: Path, tag: str, rank: int) -> tuple[dict, dict]:
    """Restore engine (model, optimizer) and return (client_state, this rank's state)."""
    path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if path is None:
        raise RuntimeError(f"checkpoint {ckpt_dir / tag} could not be loaded")
    rank_file = ckpt_dir / tag / f"rank{rank}.pt"
    if not rank_file.is_file():
        raise RuntimeError(f"checkpoint {ckpt_dir / tag} has no state for rank {rank} "
                           f"(was it saved with a different number of processes?)")
    return client_state, torch.load(rank_file, weights_only=True)
