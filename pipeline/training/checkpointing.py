"""DeepSpeed checkpoints with a `latest` pointer that only moves once every rank has finished.

The layout, the tags and the COMPLETE marker belong to the run store (pipeline/runs.py); here
they are written: every rank's DeepSpeed files and rank<R>.pt (loader, RNG), then, after a
barrier, rank 0's marker and `latest`.

A kill at any moment leaves at worst a tag without COMPLETE, which is never loaded. A checkpoint
written by another number of ranks is first converted by rank 0 into DeepSpeed's universal format
(step00000100/universal/, kept beside it), which every rank then loads into its own partition. A
checkpoint whose files no longer match the sizes COMPLETE recorded (torn by a failing disk or a
copy), or that fails to load, is skipped with a warning in favour of the one before it.
"""
from __future__ import annotations

import errno
import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from . import peft_base
from .train_state import TrainState
from ..errors import PipelineError
from ..instruments import Instruments
from ..runs import (COMPLETE, Marker, candidates, complete_tags, find_resume_tag, rank_state_file,
                    saved_world, set_latest, tag_for, verify, write_atomic, write_marker)


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


def save(engine, ckpt_dir: Path, state: TrainState, rank_state: dict, rank: int, keep_last: int,
         about: dict, instruments: Instruments = Instruments()) -> str:
    """Save `state` and the engine on every rank, and `rank_state` (loader, RNG) per rank; mark
    complete and move `latest` only after all ranks wrote. `about` fills the self-describing
    fields of the COMPLETE marker (model, zero_stage, world_size, tokenizer_sha256; runs.Marker);
    a PEFT model's base identity is added too, and its frozen base left out of the files
    (peft_base.py). `instruments` may act around the file writes and after them (tests' faults).

    When writing fails on any rank (a full disk fails inside torch.save with a RuntimeError, or
    as an OSError), every rank raises the same PipelineError naming the checkpoint and the
    failing ranks; what was complete before (the previous checkpoint, `latest`) is untouched."""
    step = state.step
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    if rank == 0 and tag_dir.exists() and not (tag_dir / COMPLETE).exists():
        shutil.rmtree(tag_dir)  # left half-written by a killed run
    torch.distributed.barrier()
    deferred = _DeferredWrites(engine.checkpoint_engine)
    engine.checkpoint_engine = deferred
    try:
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=state.client_state(),
                               save_latest=False)
    finally:
        engine.checkpoint_engine = deferred.inner
    peft_base.drop_base(engine.module, deferred.pending)
    why = ""
    try:
        with instruments.checkpoint_writes(step):
            for state_dict, path in deferred.pending:
                deferred.inner.save(state_dict, path)
            torch.save(rank_state, rank_state_file(tag_dir, rank))
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
    instruments.checkpoint_written(step)
    torch.distributed.barrier()
    if rank == 0:
        write_marker(tag_dir, Marker(step, _file_sizes(tag_dir), **about,
                                     extra=peft_base.marker_fields(engine.module)))
        set_latest(ckpt_dir, tag)
        for old in complete_tags(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    torch.distributed.barrier()
    return tag


UNIVERSAL = "universal"


def needs_universal(train, saved: int, world: int) -> bool:
    """Optimizer state partitioned over ranks (ZeRO, or the bf16 optimizer) must be converted to
    be loaded by another number of ranks; unpartitioned fp32 state loads as it is."""
    return saved != world and (train.zero_stage > 0 or train.precision == "bf16")


def to_universal(tag_dir: Path) -> Path:
    """DeepSpeed's universal checkpoint of `tag_dir` (made once, by one process): every
    parameter's fp32 weights and Adam moments whole, loadable by any number of ranks."""
    out = tag_dir / UNIVERSAL
    if (out / COMPLETE).is_file():
        return out
    import argparse

    from deepspeed.checkpoint import ds_to_universal

    tmp = tag_dir / (UNIVERSAL + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    ds_to_universal.main(argparse.Namespace(
        input_folder=str(tag_dir), output_folder=str(tmp), num_extract_workers=1, num_merge_workers=1,
        keep_temp_folder=False, strict=True, inject_missing_state=True))
    write_atomic(tmp / COMPLETE, json.dumps({"from": tag_dir.name}))
    tmp.replace(out)
    return out


def _load_one(engine, ckpt_dir: Path, tag: str, rank: int, universal: bool) -> tuple[dict, dict]:
    problem = verify(ckpt_dir / tag)
    if problem:
        raise RuntimeError(problem)
    saved = saved_world(ckpt_dir / tag)
    # the loader position is the same on every rank; a rank beyond the saved ones takes the RNG
    # state of rank (rank mod saved)
    rank_file = rank_state_file(ckpt_dir / tag, rank % max(saved, 1))
    if not rank_file.is_file():
        raise RuntimeError(f"no state for rank {rank}")
    rank_state = torch.load(rank_file, weights_only=True)
    if universal:
        # the param groups' settings (weight decay, lr scale) come from the config; DeepSpeed's
        # ZeRO-3 universal load would give every group those of the first
        settings = [{k: v for k, v in g.items() if k != "params"} for g in engine.optimizer.param_groups]
        with peft_base.filled_loads(engine):
            path, client_state = engine.load_checkpoint(str(ckpt_dir / tag), tag=UNIVERSAL)
        for group, kept in zip(engine.optimizer.param_groups, settings):
            group.update(kept)
        # and hands one step-count tensor to every group, which each group's step would then
        # advance in place: give each its own
        inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
        for state in inner.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()
    else:
        with peft_base.filled_loads(engine):
            path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if path is None:
        raise RuntimeError("DeepSpeed could not load it")
    return client_state, rank_state


def load_newest(engine, ckpt_dir: Path, rank: int, tags: list[str] | None = None,
                universal: bool = False):
    """Restore the newest loadable checkpoint on every rank; returns (tag, client, rank_state) or
    None when there is none. Ranks agree on each attempt, so all end on the same checkpoint.
    `universal`: the engine loads the universal form (converted here by rank 0 first)."""
    for tag in candidates(ckpt_dir) if tags is None else tags:
        ok, why = torch.ones(1), ""
        if universal and rank == 0:
            try:
                to_universal(ckpt_dir / tag)
            except Exception as err:  # DeepSpeed's converter asserts on what it cannot convert
                ok, why = torch.zeros(1), f"conversion to a universal checkpoint failed: {_describe(err)}"
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        try:
            if not ok.item():
                raise RuntimeError(why or "conversion failed on rank 0")
            client, rank_state = _load_one(engine, ckpt_dir, tag, rank, universal)
        except Exception as err:  # a torn file can fail in any unpickling or tensor code
            ok, why = torch.zeros(1), f"{type(err).__name__}: {err}"
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        if ok.item():
            return tag, client, rank_state
        if rank == 0 or why:
            warnings.warn(f"checkpoint {ckpt_dir / tag} is unusable ({why or 'on another rank'}); "
                          "falling back to the one before it", stacklevel=2)
    return None
