"""DeepSpeed checkpoints with a `latest` pointer that only moves once every rank has finished.

Layout under runs/<name>/checkpoints/:
    step00000100/            DeepSpeed files (model, optimizer shards) + rank<R>.pt (loader, RNG)
    step00000100/COMPLETE    JSON {step, files: {name: bytes}}, written by rank 0 after a barrier
    latest                   the tag of the newest complete checkpoint (replaced atomically)

A kill at any moment leaves at worst a tag without COMPLETE, which is never loaded. A checkpoint
whose files no longer match the sizes COMPLETE recorded (torn by a failing disk or a copy), or
that fails to load, is skipped with a warning in favour of the one before it.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from . import faults
from .errors import PipelineError

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


def _file_sizes(tag_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(tag_dir)): p.stat().st_size
            for p in sorted(tag_dir.rglob("*")) if p.is_file() and p.name != COMPLETE}


class _DeferredWrites:
    """Stands in for DeepSpeed's checkpoint engine during save_checkpoint: the files it would
    write are kept in memory and written afterwards. save_checkpoint runs collectives between its
    writes (gathers, barriers), so a rank whose disk fails inside it would leave the others
    blocked; with the writes after it, every rank reaches the vote on whether all succeeded."""

    def __init__(self, inner):
        self.inner, self.pending = inner, []

    def save(self, state_dict, path):
        self.pending.append((state_dict, path))

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "no space left on device"
    return " ".join(f"{type(err).__name__}: {err}".split())  # torch's messages span lines


def save(engine, ckpt_dir: Path, step: int, client_state: dict, rank_state: dict, rank: int,
         keep_last: int, marker: dict | None = None) -> str:
    """Save on every rank; mark complete and move `latest` only after all ranks wrote. `marker`
    adds fields to the COMPLETE marker (the tokenizer digest).

    When writing fails on any rank (a full disk fails inside torch.save with a RuntimeError, or
    as an OSError), every rank raises the same PipelineError naming the checkpoint and the
    failing ranks; what was complete before (the previous checkpoint, `latest`) is untouched."""
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    if rank == 0 and tag_dir.exists() and not (tag_dir / COMPLETE).exists():
        shutil.rmtree(tag_dir)  # left half-written by a killed run
    torch.distributed.barrier()
    deferred = _DeferredWrites(engine.checkpoint_engine)
    engine.checkpoint_engine = deferred
    try:
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    finally:
        engine.checkpoint_engine = deferred.inner
    why = ""
    try:
        with faults.disk_full_in_save(step, rank):
            for state_dict, path in deferred.pending:
                deferred.inner.save(state_dict, path)
            torch.save(rank_state, tag_dir / f"rank{rank}.pt")
    except Exception as err:  # any failure to write: the ranks must agree before going on
        why = _describe(err)
    reasons: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(reasons, why)
    failed = [f"rank {r}: {text}" for r, text in enumerate(reasons) if text]
    if failed:
        torch.distributed.barrier()  # every rank is done touching the directory
        if rank == 0:
            shutil.rmtree(tag_dir, ignore_errors=True)
        previous = find_resume_tag(ckpt_dir)
        raise PipelineError(f"saving checkpoint {tag_dir} failed ({'; '.join(failed)}); it was removed "
                            f"and the previous checkpoint ({previous or 'none'}) is intact: free disk "
                            "space, then re-run the same command to resume")
    faults.maybe_kill("kill_in_save", step, rank)
    torch.distributed.barrier()
    if rank == 0:
        record = {"step": step, "files": _file_sizes(tag_dir), **(marker or {})}
        _write_atomic(tag_dir / COMPLETE, json.dumps(record))
        _write_atomic(ckpt_dir / LATEST, tag + "\n")
        for old in complete_tags(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    torch.distributed.barrier()
    return tag


def verify(tag_dir: Path) -> str | None:
    """None when the checkpoint is whole, else what is wrong with it."""
    try:
        recorded = json.loads((tag_dir / COMPLETE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable {COMPLETE} marker ({err})"
    for name, size in recorded.items():
        path = tag_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def candidates(ckpt_dir: Path) -> list[str]:
    """Complete tags to try, best first: the one `latest` names, then the rest newest first."""
    tags = complete_tags(ckpt_dir)[::-1]
    latest = ckpt_dir / LATEST
    if latest.is_file() and latest.read_text().strip() in tags:
        tags.remove(pointed := latest.read_text().strip())
        tags.insert(0, pointed)
    return tags


def find_resume_tag(ckpt_dir: Path) -> str | None:
    """The newest complete checkpoint whose files are whole (no loading)."""
    return next((tag for tag in candidates(ckpt_dir) if verify(ckpt_dir / tag) is None), None)


def _load_one(engine, ckpt_dir: Path, tag: str, rank: int) -> tuple[dict, dict]:
    problem = verify(ckpt_dir / tag)
    if problem:
        raise RuntimeError(problem)
    rank_file = ckpt_dir / tag / f"rank{rank}.pt"
    if not rank_file.is_file():
        raise RuntimeError(f"no state for rank {rank} (saved with a different number of processes?)")
    rank_state = torch.load(rank_file, weights_only=True)
    path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if path is None:
        raise RuntimeError("DeepSpeed could not load it")
    return client_state, rank_state


def load_newest(engine, ckpt_dir: Path, rank: int, tags: list[str] | None = None):
    """Restore the newest loadable checkpoint on every rank; returns (tag, client, rank_state) or
    None when there is none. Ranks agree on each attempt, so all end on the same checkpoint."""
    for tag in candidates(ckpt_dir) if tags is None else tags:
        ok, why = torch.ones(1), ""
        try:
            client, rank_state = _load_one(engine, ckpt_dir, tag, rank)
        except Exception as err:  # a torn file can fail in any unpickling or tensor code
            ok, why = torch.zeros(1), f"{type(err).__name__}: {err}"
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        if ok.item():
            return tag, client, rank_state
        if rank == 0 or why:
            warnings.warn(f"checkpoint {ckpt_dir / tag} is unusable ({why or 'on another rank'}); "
                          "falling back to the one before it", stacklevel=2)
    return None
