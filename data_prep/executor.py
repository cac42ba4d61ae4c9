"""Where tasks run: Ray (a local instance, or the cluster at RAY_ADDRESS), or this process.

`run(fn, calls, ...)` runs `fn(*call, progress=progress)` for every call and hands each result's first item
to `on_done` as it completes. Other return items (the dedup keys, the tokenizer sample) stay in
Ray's object store as references that later calls take as arguments, so they never pass through
the driver. While a local Ray instance starts (seconds, mostly waiting), the driver runs calls
itself from the same queue; which process runs a call never changes what it returns.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Callable

from .errors import UserError
from .progress import Bar, Counter, RayCounter, TaskProgress

POLL_SECONDS = 0.5


def _as_list(out, returns: int) -> list:
    return list(out) if returns > 1 else [out]


class LocalExecutor:
    """Everything in this process, in order: the plain reference path."""

    def run(self, fn: Callable, calls: list[tuple], returns: int, on_done: Callable, bar: Bar) -> list[list]:
        counter, results = Counter(), []
        for i, call in enumerate(calls):
            progress = TaskProgress(counter)
            out = _as_list(fn(*call, progress=progress), returns)
            progress.flush()
            results.append(out)
            on_done(i, out[0])
            bar.show(counter.totals(), i + 1, len(calls))
        return results

    def close(self) -> None:
        pass


class RayExecutor:
    def __init__(self, num_cpus: int | None, env: dict[str, str]):
        self.num_cpus, self.env, self.started = num_cpus, env, False

    def _start(self) -> None:
        import ray

        if ray.is_initialized():
            return
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

    def run(self, fn: Callable, calls: list[tuple], returns: int, on_done: Callable, bar: Bar) -> list[list]:
        import ray

        queue, results, lock = deque(range(len(calls))), [None] * len(calls), threading.Lock()
        local, errors, stop, done = Counter(), [], threading.Event(), [0]

        def finish(i: int, out: list) -> None:
            with lock:
                results[i] = out
                done[0] += 1
                on_done(i, out[0])

        def assist() -> None:
            try:
                while not stop.is_set():
                    with lock:
                        if not queue:
                            return
                        i = queue.popleft()
                    progress = TaskProgress(local)
                    out = _as_list(fn(*calls[i], progress=progress), returns)
                    progress.flush()
                    finish(i, out)
            except BaseException as err:  # re-raised below, in the main thread
                errors.append(err)

        helper = None
        if not ray.is_initialized():
            helper = threading.Thread(target=assist, name="data_prep-assist", daemon=True)
            helper.start()
        try:
            self._start()
        finally:
            stop.set()
        try:
            with lock:
                rest, queue = list(queue), deque()
            actor = ray.remote(RayCounter).options(num_cpus=0).remote()
            options = dict(num_cpus=1, max_retries=2, num_returns=returns)
            if self.env:
                options["runtime_env"] = {"env_vars": self.env}
            remote = ray.remote(fn).options(**options)
            first = {}
            for i in rest:
                refs = _as_list(remote.remote(*calls[i], progress=TaskProgress(actor)), returns)
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
        finally:
            if helper is not None:
                helper.join()
        if errors:
            raise errors[0]
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


def make_executor(kind: str, num_cpus: int | None, env: dict[str, str]):
    return LocalExecutor() if kind == "local" else RayExecutor(num_cpus, env)
