"""Read batches ahead on a background thread, without giving up exact resume.

Each batch travels with the stream position right after it, so `state_dict()` is the position
after the last batch the trainer actually took, however far the thread has read ahead.
"""
from __future__ import annotations

import queue
import threading

import torch

from ..errors import PipelineError


class Prefetcher:
    def __init__(self, stream, batch_size: int, depth: int = 4):
        self.stream, self.batch_size = stream, batch_size
        self._state = stream.state_dict()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.stream.next_batch(self.batch_size)
                self._put((batch, self.stream.state_dict()))
        except BaseException as err:  # handed to the trainer, which re-raises it
            self._put((err, None))

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next_batch(self) -> torch.Tensor:
        batch, state = self._queue.get()
        if isinstance(batch, PipelineError):  # already one line naming what is wrong
            raise batch
        if isinstance(batch, BaseException):
            raise PipelineError(f"reading training data failed: {batch}") from batch
        self._state = state
        return batch

    def state_dict(self) -> dict:
        return self._state

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
