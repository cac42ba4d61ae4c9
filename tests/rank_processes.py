"""Ranks of `pipeline.train` as processes forked from a server that has already imported it.

A run that a fault kills, or that needs several ranks, must be processes of its own, but a fresh
interpreter per rank (as torchrun starts them) spends seconds importing torch and DeepSpeed. A
multiprocessing forkserver imports the trainer once per test process and forks every rank from
that clean, single-threaded state. Each rank gets the environment torchrun would give it. When
one rank fails, the others get a moment to end on their own (the trainer's ranks agree on a
failure and all stop), then, as under torchrun, are stopped (SIGTERM, SIGKILL after a grace
period), and a multi-rank launch exits 1. One rank exits as `python -m pipeline.train` would."""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import multiprocessing.connection
import os
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

# imported once by the server; the second is what DeepSpeed imports when it builds an optimizer
PRELOAD = ["pipeline.train", "deepspeed.runtime.zero.muon.muon_optimizer"]
DRAIN_S = 10.0  # how long the other ranks may take to stop by themselves after one fails
GRACE_S = 30.0  # torchrun's wait between SIGTERM and SIGKILL
_context = None


def launch(args: list[str], nproc: int, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `nproc` ranks of the trainer with `args` and the environment `env`; their stdout and
    stderr, rank by rank, and the exit status are returned as from a subprocess."""
    ctx = _forkserver()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ranks-") as tmp:
        procs = [ctx.Process(target=_rank_main,
                             args=(args, _rank_env(env, rank, nproc, port), Path(tmp), rank))
                 for rank in range(nproc)]
        with _no_main_module():
            for proc in procs:
                proc.start()
        code = _wait(procs, timeout)
        out = "".join(_read(Path(tmp) / f"{rank}.out") for rank in range(nproc))
        err = "".join(_read(Path(tmp) / f"{rank}.err") for rank in range(nproc))
    return subprocess.CompletedProcess(["pipeline.train", *args], code, out, err)


@contextlib.contextmanager
def _no_main_module():
    """Ranks need nothing of the caller's __main__, which multiprocessing would otherwise re-run
    in each child by its path (a script that set up its own sys.path cannot be found there)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _read(path: Path) -> str:
    """A rank's output; empty when it ended before opening it."""
    return path.read_text(errors="replace") if path.exists() else ""


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def free_port() -> int:
    """A TCP port nobody listens on now (the launchers' tests use it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(env: dict, rank: int, nproc: int, port: int) -> dict:
    """torchrun's variables; a MASTER_PORT in `env` is kept (a test that must know it)."""
    return {"MASTER_PORT": str(port), **env, "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0",
            "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1"}


def _wait(procs, timeout: float) -> int:
    """The launch's exit status once every rank has ended; stops the rest when one fails."""
    deadline, pending = time.monotonic() + timeout, list(procs)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _stop(pending, grace=0)
            raise subprocess.TimeoutExpired("pipeline.train ranks", timeout)
        for sentinel in multiprocessing.connection.wait([p.sentinel for p in pending], remaining):
            proc = next(p for p in pending if p.sentinel == sentinel)
            proc.join()
            pending.remove(proc)
            if proc.exitcode != 0 and pending:
                _join_all(pending, DRAIN_S)
                _stop(pending, GRACE_S)
                pending = []
                break
    if len(procs) == 1:
        return procs[0].exitcode
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def _join_all(procs, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))


def _stop(procs, grace: float) -> None:
    """SIGTERM to the ranks still running, SIGKILL to those still running `grace` seconds later."""
    alive = [p for p in procs if p.is_alive()]
    for proc in alive:
        proc.terminate()
    _join_all(alive, grace)
    for proc in alive:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _rank_main(args: list[str], env: dict, out_dir: Path, rank: int) -> None:
    """One rank: the process's environment, fds 1 and 2 on files, `main(args)`, its exit status."""
    os.environ.clear()
    os.environ.update(env)
    for fd, suffix in ((1, "out"), (2, "err")):
        os.dup2(os.open(out_dir / f"{rank}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    # unbuffered, as the command runs (PYTHONUNBUFFERED=1): what a killed rank printed is kept
    sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), write_through=True)
    import torch

    from in_process import exit_status

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    sys.exit(exit_status(args))  # multiprocessing flushes, runs the process's finalizers and exits with it
