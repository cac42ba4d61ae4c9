"""The points of a training step an instrument can act at; every one is a no-op here."""
from __future__ import annotations

import contextlib

import numpy as np
import torch


class Instruments:
    """Override what an instrument needs. `step` is always the step being trained or just done
    (1-based), on this process's rank."""

    def batch(self, step: int, micro: int, windows: np.ndarray, tokens: np.ndarray) -> None:
        """A micro-batch was read: its (source, epoch, shard, window) rows and tokens."""

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """A micro-batch's loss, before its backward pass."""
        return loss

    def validation(self, module: torch.nn.Module, step: int) -> contextlib.AbstractContextManager:
        """Around the step's validation."""
        return contextlib.nullcontext()

    def after_step(self, step: int) -> None:
        """The step's record is written."""

    def checkpoint_writes(self, step: int) -> contextlib.AbstractContextManager:
        """Around the writing of this rank's checkpoint files."""
        return contextlib.nullcontext()

    def checkpoint_written(self, step: int) -> None:
        """Every rank wrote its files; the checkpoint is not marked complete yet."""


class Several(Instruments):
    """Instruments applied in order."""

    def __init__(self, parts: list[Instruments]):
        self.parts = parts

    def batch(self, step, micro, windows, tokens):
        for part in self.parts:
            part.batch(step, micro, windows, tokens)

    def loss(self, step, loss):
        for part in self.parts:
            loss = part.loss(step, loss)
        return loss

    @contextlib.contextmanager
    def validation(self, module, step):
        with contextlib.ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.validation(module, step))
            yield

    def after_step(self, step):
        for part in self.parts:
            part.after_step(step)

    @contextlib.contextmanager
    def checkpoint_writes(self, step):
        with contextlib.ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.checkpoint_writes(step))
            yield

    def checkpoint_written(self, step):
        for part in self.parts:
            part.checkpoint_written(step)
