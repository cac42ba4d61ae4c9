"""`python -m pipeline.train` for one rank, run inside the test process.

A subprocess proves nothing more about a single rank than its exit code and output, which this
returns the same way, but it pays Python's, torch's and DeepSpeed's start-up on every run. Runs
that a fault kills or that need several ranks are processes forked from one that has imported
the trainer (rank_processes.py); launcher tests run the command itself. Each run here gets the
environment a subprocess would (one thread, its own process group of one, its own warnings)
and leaves the test process as it found it."""
from __future__ import annotations

import contextlib
import gc
import io
import os
import subprocess
import traceback
import warnings

import torch

from pipeline.instruments import faults

# what a launcher or an earlier run may have left that would make the trainer join a group
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


def kills(env: dict | None) -> bool:
    """True when GOLDFINCH_FAULTS in `env` ends the process: only a real process can be killed."""
    return any(what in faults.KILLS for what, _, _ in faults.parse((env or {}).get(faults.ENV, "")))


def train(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """pipeline.train.main(args) with its stdout, stderr and exit status captured."""
    out, err = io.StringIO(), io.StringIO()
    with _environment(env), _threads(1), torch.random.fork_rng(devices=[]), _warnings_to(err), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = exit_status(args)
        finally:
            _leave_process_group()
    gc.collect()
    return subprocess.CompletedProcess(["pipeline.train", *args], code, out.getvalue(), err.getvalue())


def exit_status(args: list[str]) -> int:
    """`python -m pipeline.train args`'s exit status, in this process: an exception that would
    end the command with a traceback prints it to stderr and gives 1, as the command does."""
    from pipeline.train import main

    try:
        return main(args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # noqa: BLE001 - the command would print it and exit 1
        traceback.print_exc()
        return 1


@contextlib.contextmanager
def _environment(env: dict | None):
    saved = dict(os.environ)
    for key in DIST_ENV:
        os.environ.pop(key, None)
    os.environ.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _threads(n: int):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def _warnings_to(stream: io.StringIO):
    """Warnings printed once per place, as in a fresh process, to the run's stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
            stream.write(warnings.formatwarning(message, category, filename, lineno, line))
        yield


def _leave_process_group() -> None:
    """The process group (and DeepSpeed's record of it) ends with the run, as with the process."""
    if torch.distributed.is_initialized():
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()
