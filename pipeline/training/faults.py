"""Deterministic fault injection, so tests can crash a run exactly where real failures strike.

GOLDFINCH_FAULTS is a comma list of `what:step[:rank]` (rank defaults to 0):
    kill_after_step:5     SIGKILL right after step 5's metrics are written
    kill_in_save:4        SIGKILL in the middle of step 4's checkpoint (files written, not complete)
    kill_in_val:6:1       SIGKILL in the middle of step 6's validation, after its first forward pass
    nan_loss:3            make step 3's loss NaN (its gradients too) on that rank
    enospc_in_save:6      raise "no space left on device" before writing step 6's checkpoint
    disk_full_in_save:6:1 cap the size of files this rank may write (RLIMIT_FSIZE) while writing
                          step 6's checkpoint, so the write really fails inside torch.save
Unset in normal runs, where every check below is a dictionary lookup.
"""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal

ENV = "GOLDFINCH_FAULTS"
KINDS = ("kill_after_step", "kill_in_save", "kill_in_val", "nan_loss", "enospc_in_save", "disk_full_in_save")
FILE_SIZE_CAP = 16 * 1024  # bytes: below any checkpoint file of the tiny test models


def _parse(text: str) -> set[tuple[str, int, int]]:
    faults = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        what, *nums = item.split(":")
        if what not in KINDS or len(nums) not in (1, 2):
            raise ValueError(f"{ENV}: cannot parse {item!r}; expected one of {KINDS} as what:step[:rank]")
        faults.add((what, int(nums[0]), int(nums[1]) if len(nums) == 2 else 0))
    return faults


def armed(what: str, step: int, rank: int) -> bool:
    text = os.environ.get(ENV)
    return bool(text) and (what, step, rank) in _parse(text)


def maybe_kill(what: str, step: int, rank: int) -> None:
    if armed(what, step, rank):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def kill_in_val(module, step: int, rank: int):
    """Around a validation: when armed, the first forward pass of `module` in it ends the process
    (a hook added only then, so an unarmed run's forward passes are untouched)."""
    if not armed("kill_in_val", step, rank):
        yield
        return
    handle = module.register_forward_hook(lambda *_: os.kill(os.getpid(), signal.SIGKILL))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def disk_full_in_save(step: int, rank: int):
    """Around the checkpoint's file writes: a full disk, injected or made real."""
    if armed("enospc_in_save", step, rank):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if not armed("disk_full_in_save", step, rank):
        yield
        return
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_CAP, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
