"""Progress as tasks make it: tasks add documents, tokens and bytes to a counter while they work
(buffered, about twice a second), and the driver's bar shows the totals with an ETA.

Under Ray the counter is a tiny actor; in one process it is a plain object. Either way the bar
moves while a unit is being tokenized, not only when its shards are done.
"""
from __future__ import annotations

import sys
import threading
import time

FLUSH_SECONDS = 0.5


class Counter:
    """Totals reported so far (the Ray actor's body, and the in-process counter)."""

    def __init__(self):
        self.docs = self.tokens = self.nbytes = 0
        self.lock = threading.Lock()

    def add(self, docs: int = 0, tokens: int = 0, nbytes: int = 0) -> None:
        with self.lock:
            self.docs += docs
            self.tokens += tokens
            self.nbytes += nbytes

    def totals(self) -> tuple[int, int, int]:
        with self.lock:
            return self.docs, self.tokens, self.nbytes


class RayCounter:
    """The actor form of Counter (its lock is made in the actor's process)."""

    def __init__(self):
        self.counter = Counter()

    def add(self, docs: int = 0, tokens: int = 0, nbytes: int = 0) -> None:
        self.counter.add(docs, tokens, nbytes)

    def totals(self) -> tuple[int, int, int]:
        return self.counter.totals()


class TaskProgress:
    """What a task holds: adds are summed locally and sent every FLUSH_SECONDS."""

    def __init__(self, sink):
        self.sink = sink  # a Counter, or a RayCounter actor handle
        self.pending = [0, 0, 0]
        self.last = time.monotonic()

    def add(self, docs: int = 0, tokens: int = 0, nbytes: int = 0) -> None:
        self.pending[0] += docs
        self.pending[1] += tokens
        self.pending[2] += nbytes
        if time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if any(self.pending):
            remote = getattr(self.sink.add, "remote", None)
            (remote or self.sink.add)(*self.pending)
            self.pending = [0, 0, 0]
        self.last = time.monotonic()

    def __getstate__(self):
        return {"sink": self.sink}

    def __setstate__(self, state):
        self.__init__(state["sink"])


class Bar:
    """A tqdm bar over one phase, fed from the counter's totals."""

    def __init__(self, desc: str, total: int, unit: str, enabled: bool | None):
        from tqdm import tqdm

        self.unit = unit
        self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", dynamic_ncols=True,
                        disable=enabled is False or (enabled is None and not sys.stderr.isatty()))

    def show(self, totals: tuple[int, int, int], units_done: int, units: int) -> None:
        docs, tokens, nbytes = totals
        value = nbytes if self.unit == "B" else docs
        self.bar.update(max(0, min(value, self.bar.total) - self.bar.n))
        post = {"units": f"{units_done}/{units}"}
        if self.unit != "B":
            post["tokens"] = f"{tokens:,}"
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        self.bar.close()
