"""Windows of one split of a run's data dirs, read a whole shard at a time.

A shard's documents are joined with end-of-text in the order's per-epoch document order, and
window w of the shard is tokens [w*ctx_len, w*ctx_len + ctx_len + 1) of that (windows overlap by
one token: every token is a target once). Joined shards are kept in a small LRU cache and can be
read ahead on a background thread. Training batches and validation both read through here, so a
window number means the same tokens everywhere.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


class WindowReader:
    def __init__(self, sources, split: str, orders, ctx_len: int, capacity: int,
                 read_ahead: bool = False):
        self.sources, self.split, self.orders, self.ctx_len = sources, split, orders, ctx_len
        self.capacity = max(1, capacity)
        self._lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()  # (source, epoch, shard) -> joined tokens
        self._pending: dict[tuple, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-read-ahead") \
            if read_ahead else None

    def _load(self, key: tuple) -> np.ndarray:
        source, epoch, shard_index = key
        data = self.sources[source]
        docs = data.read(data.splits[self.split][shard_index])
        order = self.orders[source].doc_order(epoch, shard_index, len(docs))
        dtype = np.int32 if data.vocab_size < 2**31 else np.int64
        joined = np.empty(sum(len(d) + 1 for d in docs), dtype=dtype)
        at = 0
        for i in order:
            joined[at:at + len(docs[i])] = docs[i]
            at += len(docs[i])
            joined[at] = data.eot
            at += 1
        return joined

    def _joined(self, key: tuple) -> np.ndarray:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            pending = self._pending.pop(key, None)
        joined = pending.result() if pending else self._load(key)
        with self._lock:
            self._cache[key] = joined
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return joined

    def read_ahead(self, keys) -> None:
        """Start reading the (source, epoch, shard) keys that are not in memory yet."""
        if self._pool is None:
            return
        with self._lock:
            for key in sorted(set(keys) - self._cache.keys() - self._pending.keys()):
                self._pending[key] = self._pool.submit(self._load, key)

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """[n, ctx_len+1] int64 tokens of [n, 4] rows (source, epoch, shard, window)."""
        c = self.ctx_len
        return np.stack([self._joined(tuple(int(x) for x in row[:3]))[row[3] * c:row[3] * c + c + 1]
                         for row in rows]).astype(np.int64)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
