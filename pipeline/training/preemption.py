"""SIGTERM / SIGINT (SLURM preemption, Ctrl-C): finish the step, checkpoint, exit cleanly.

The handler only sets a flag; ranks agree on it after each step (a one-element all-reduce), so
every rank saves the same checkpoint and leaves together.
"""
from __future__ import annotations

import signal

import torch


class StopRequest:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def agreed(self, device: torch.device) -> bool:
        """True on every rank when any rank was signalled."""
        flag = torch.tensor([1.0 if self.signal is not None else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
