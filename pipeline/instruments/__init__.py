"""Ways to watch or disturb a training run from outside, for tests and benchmarks.

The trainer calls one `Instruments` object at a few points of a step. In a normal run that is the
no-op base class, so no test code is imported or run; an environment variable turns each
instrument on, and `from_environment` builds what is asked for:
    GOLDFINCH_FAULTS     faults.py     crash, fail a save or poison a loss at a chosen step
    GOLDFINCH_BATCH_LOG  batch_log.py  record the windows each rank trained on
"""
from __future__ import annotations

import importlib
import os

from .base import Instruments, Several

# environment variable -> the module whose `Instrument(rank, value)` it turns on
BY_ENV = {"GOLDFINCH_FAULTS": "faults", "GOLDFINCH_BATCH_LOG": "batch_log"}


def from_environment(rank: int) -> Instruments:
    """The instruments this process's environment asks for; the no-op base when none."""
    active = [importlib.import_module(f".{module}", __name__).Instrument(rank, os.environ[env])
              for env, module in BY_ENV.items() if os.environ.get(env)]
    return active[0] if len(active) == 1 else Several(active) if active else Instruments()


__all__ = ["Instruments", "from_environment"]
