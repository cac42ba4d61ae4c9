"""Where tasks run: Ray (a local instance, or the cluster at RAY_ADDRESS), or this process.

`run(fn, calls, ...)` runs `fn(*call, progress=progress)` for every call and hands each result's first item
to `on_done` as it completes. Other return items (the dedup keys, the tokenizer sample) stay in
Ray's object store as references that later calls take as arguments, so they never pass through
the driver. While a local Ray instance starts (seconds, mostly waiting), the driver runs calls itself, in
whatever phase it has reached; which process runs a call never changes what it returns.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .errors import UserError
from .progress import Bar, Counter, RayCounter, TaskProgress

POLL_SECONDS = 0.5
LOCAL_WORKERS = 2  # calls in flight in this process: one tokenizing while the other reads or writes


def _in_worker(fn: Callable, *args, progress=None):
    """A call in a Ray worker: the tokenizer uses the one CPU the task was given."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    return fn(*args, progress=progress)


def _as_list(out, returns: int) -> list:
    return list(out) if returns > 1 else [out]


class LocalExecutor:
    """Everything in this process. Up to `workers` calls run at once in threads, so one unit's
    reading, packing and hashing (Python) overlaps another's tokenizing (Rust, without the GIL);
    results are handed over in call order, and at most `workers` calls are ever in flight, so
    nothing waits in memory for a slow neighbour beyond that window."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or LOCAL_WORKERS

    def run(self, fn: Callable, calls: list[tuple], returns: int, on_done: Callable, bar: Bar) -> list[list]:
        counter, results = Counter(), []

        def one(call: tuple) -> list:
            progress = TaskProgress(counter)
            out = _as_list(fn(*call, progress=progress), returns)
            progress.flush()
            return out

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="data_prep-local")
        in_flight: deque = deque()
        try:
            for i in range(len(calls)):
                while len(in_flight) < self.workers and i + len(in_flight) < len(calls):
                    in_flight.append(pool.submit(one, calls[i + len(in_flight)]))
                out = in_flight.popleft().result()
                results.append(out)
                on_done(i, out[0])
                bar.show(counter.totals(), i + 1, len(calls))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    def drive(self, phases: Callable):
        return phases()

    def close(self) -> None:
        pass


class RayExecutor:
    """Ray starts in the main thread while the phases run in a helper thread (`drive`); until Ray
    is up, every phase's calls run in this process."""

    def __init__(self, num_cpus: int | None, env: dict[str, str]):
        self.num_cpus, self.env, self.started = num_cpus, env, False
        self.ready, self.failed = threading.Event(), []

    def _start(self) -> None:
        import ray

        opts = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        address = os.environ.get("RAY_ADDRESS")
        if address:
            try:
                ray.init(**opts)
            except (ConnectionError, RuntimeError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise UserError(f"cannot join the Ray cluster at RAY_ADDRESS={address}: {first} (a cluster "
                                "with token auth also needs RAY_AUTH_MODE=token and its token)") from None
        else:
            # "local": a new instance even if `ray start` left one here; num_cpus=None counts the CPUs
            ray.init(address="local", num_cpus=self.num_cpus, **opts)
        self.started = True

    def drive(self, phases: Callable):
        """phases() in a helper thread while Ray starts here (ray.init wants the main thread)."""
        import ray

        if ray.is_initialized():
            self.ready.set()
            return phases()
        outcome: list = []

        def body():
            try:
                outcome.append(("ok", phases()))
            except BaseException as err:  # re-raised in the main thread
                outcome.append(("err", err))

        helper = threading.Thread(target=body, name="data_prep-phases", daemon=True)
        helper.start()
        try:
            self._start()
        except BaseException as err:
            self.failed.append(err)
        finally:
            self.ready.set()
        helper.join()
        if self.failed:
            raise self.failed[0]
        kind, value = outcome[0]
        if kind == "err":
            raise value
        return value

    def run(self, fn: Callable, calls: list[tuple], returns: int, on_done: Callable, bar: Bar) -> list[list]:
        import ray

        queue, results, local, done = deque(range(len(calls))), [None] * len(calls), Counter(), [0]

        def finish(i: int, out: list) -> None:
            results[i] = out
            done[0] += 1
            on_done(i, out[0])

        while queue and not self.ready.is_set():
            i = queue.popleft()
            progress = TaskProgress(local)
            out = _as_list(fn(*calls[i], progress=progress), returns)
            progress.flush()
            finish(i, out)
            bar.show(local.totals(), done[0], len(calls))
        if not queue:
            return results
        self.ready.wait()
        if self.failed:
            raise UserError("Ray did not start") from self.failed[0]
        actor = ray.remote(RayCounter).options(num_cpus=0).remote()
        options = dict(num_cpus=1, max_retries=2, num_returns=returns)
        if self.env:
            options["runtime_env"] = {"env_vars": self.env}
        remote = ray.remote(_in_worker).options(**options)
        first = {}
        for i in queue:
            refs = _as_list(remote.remote(fn, *calls[i], progress=TaskProgress(actor)), returns)
            results[i] = refs
            first[refs[0]] = i
        pending = list(first)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_SECONDS)
            for ref in ready:
                out = list(results[first[ref]])
                out[0] = _get(ref)
                finish(first[ref], out)
            remote_totals = ray.get(actor.totals.remote())
            bar.show(tuple(a + b for a, b in zip(local.totals(), remote_totals)), done[0], len(calls))
        ray.kill(actor)
        return results

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _get(ref):
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserError):
            raise err.cause from None
        raise


def choose(kind: str, input_bytes: int, auto_local_bytes: int, environ=os.environ) -> str:
    """data.executor=auto: a small corpus is done in this process before a Ray instance would even
    be up (seconds of start and shutdown); a large one, or a cluster to join, goes to Ray."""
    if kind != "auto":
        return kind
    if environ.get("RAY_ADDRESS"):
        return "ray"
    return "local" if input_bytes < auto_local_bytes else "ray"


def make_executor(kind: str, num_cpus: int | None, env: dict[str, str]):
    return LocalExecutor() if kind == "local" else RayExecutor(num_cpus, env)
