"""How a run's MLflow run ends: FINISHED, KILLED (SIGTERM, SIGINT) or FAILED (anything else).

Inside the step loop a signal only sets a flag (training/preemption.py): the step ends, a
checkpoint is saved and the run ends KILLED. Outside it (start-up, the final export) the default
SIGTERM would end the process on the spot and leave the MLflow run RUNNING for ever; while a run
is open, SIGTERM raises `Terminated` instead, so the run is closed as KILLED on the way out. A
kill -9 cannot be caught: the next resume reopens the same MLflow run and sets it RUNNING again.
"""
from __future__ import annotations

import signal

FINISHED, KILLED, FAILED = "FINISHED", "KILLED", "FAILED"


class Terminated(BaseException):
    """SIGTERM outside the step loop; a BaseException so that `except Exception` lets it through."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def status_after(err: BaseException) -> str:
    """The MLflow status of a run that an exception ended."""
    return KILLED if isinstance(err, (Terminated, KeyboardInterrupt)) else FAILED


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


class SigtermRaises:
    """While installed, SIGTERM raises Terminated (the handler StopRequest hands back after the loop)."""

    def __init__(self):
        self.previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)
