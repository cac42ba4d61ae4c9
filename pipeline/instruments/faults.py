"""Deterministic fault injection, so tests can crash a run exactly where real failures strike.

GOLDFINCH_FAULTS is a comma list of `what:step[:rank]` (rank defaults to 0):
    kill_after_step:5     SIGKILL right after step 5's metrics are written
    kill_in_save:4        SIGKILL in the middle of step 4's checkpoint (files written, not complete)
    kill_in_val:6:1       SIGKILL in the middle of step 6's validation, after its first forward pass
    nan_loss:3            make step 3's loss NaN (its gradients too) on that rank
    enospc_in_save:6      raise "no space left on device" before writing step 6's checkpoint
    disk_full_in_save:6:1 cap the size of files this rank may write (RLIMIT_FSIZE) while writing
                          step 6's checkpoint, so the write really fails inside torch.save
"""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal

from common.errors import UserError

from .base import Instruments

ENV = "GOLDFINCH_FAULTS"
KILLS = ("kill_after_step", "kill_in_save", "kill_in_val")  # the faults that end the process
KINDS = (*KILLS, "nan_loss", "enospc_in_save", "disk_full_in_save")
FILE_SIZE_CAP = 16 * 1024  # bytes: below any checkpoint file of the tiny test models


def parse(text: str) -> set[tuple[str, int, int]]:
    """{(what, step, rank)} of a GOLDFINCH_FAULTS value."""
    faults = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        what, *nums = item.split(":")
        if what not in KINDS or len(nums) not in (1, 2) or not all(n.isdigit() for n in nums):
            raise UserError(f"{ENV}: cannot parse {item!r}; expected one of {KINDS} as what:step[:rank]")
        faults.add((what, int(nums[0]), int(nums[1]) if len(nums) == 2 else 0))
    return faults


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Instrument(Instruments):
    def __init__(self, rank: int, value: str):
        self.rank, self.faults = rank, parse(value)

    def armed(self, what: str, step: int) -> bool:
        return (what, step, self.rank) in self.faults

    def loss(self, step, loss):
        return loss * float("nan") if self.armed("nan_loss", step) else loss

    @contextlib.contextmanager
    def validation(self, module, step):
        """When armed, the first forward pass of `module` in the validation ends the process."""
        if not self.armed("kill_in_val", step):
            yield
            return
        handle = module.register_forward_hook(lambda *_: _kill())
        try:
            yield
        finally:
            handle.remove()

    def after_step(self, step):
        if self.armed("kill_after_step", step):
            _kill()

    @contextlib.contextmanager
    def checkpoint_writes(self, step):
        """A full disk, injected or made real."""
        if self.armed("enospc_in_save", step):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if not self.armed("disk_full_in_save", step):
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

    def checkpoint_written(self, step):
        if self.armed("kill_in_save", step):
            _kill()
