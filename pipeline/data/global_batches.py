"""A rank's micro-batches of the global order: the same global batches for any number of ranks.

Global batch s is windows [s*G, (s+1)*G) of the global order (G = micro_batch x grad_accum x
ranks, fixed by `train.global_batch`). Its windows are sorted by (source, epoch, shard, window),
and rank r takes the contiguous slice [r*m*a, (r+1)*m*a) as its a micro-batches of m: the step
averages over the same G windows whatever the split, while a rank's slice touches few shards, so
it reads only those (with the next steps' shards loaded ahead on a background thread). The
position is the number of global windows consumed, so a checkpoint written by N ranks resumes
with M.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ..errors import PipelineError
from .batch_log import BatchLog
from .mixture import Mixture
from .order import SourceOrder



class GlobalBatches:
    def __init__(self, sources, weights, names, ctx_len: int, seed: int, shuffle: bool, buffer: int,
                 micro_batch: int, grad_accum: int, rank: int, world: int, read_ahead: int = 2):
        self.sources, self.names = sources, names
        self.ctx_len, self.seed, self.shuffle, self.buffer = ctx_len, seed, shuffle, buffer
        self.micro_batch, self.grad_accum, self.rank, self.world = micro_batch, grad_accum, rank, world
        self.global_batch = micro_batch * grad_accum * world
        self.read_ahead = read_ahead
        self.orders = [SourceOrder(d.splits.get("train", []), ctx_len, seed, i, shuffle, buffer)
                       for i, d in enumerate(sources)]
        for data, order in zip(sources, self.orders):
            if order.per_epoch == 0:
                raise ValueError(f"model.ctx_len={ctx_len}: no train shard of {data.path} holds a "
                                 f"whole {ctx_len + 1}-token window")
        self.mixture = Mixture(weights, seed)
        self.step = self.micro = 0
        self._slice: np.ndarray | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()  # (source, epoch, shard) -> joined tokens
        # two shuffle buffers per source: the current group's shards and the next one's
        self._capacity = 2 * max(buffer, 1) * len(sources) + 2
        self._pending: dict[tuple, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-read-ahead") \
            if read_ahead else None
        self._log = BatchLog(rank)

    def step_windows(self, step: int) -> np.ndarray:
        """[G, 4] rows (source, epoch, shard, window) of global batch `step`, sorted."""
        start = step * self.global_batch
        sources, counters = self.mixture.assign(start, start + self.global_batch)
        rows = np.empty((len(sources), 4), dtype=np.int64)
        rows[:, 0] = sources
        for s in np.unique(sources):
            at = sources == s
            rows[at, 1:] = self.orders[s].locate(counters[at])
        return rows[np.lexsort(rows.T[::-1])]

    def rank_windows(self, step: int) -> np.ndarray:
        per_rank = self.micro_batch * self.grad_accum
        return self.step_windows(step)[self.rank * per_rank:(self.rank + 1) * per_rank]

    def _load(self, key: tuple) -> np.ndarray:
        source, epoch, shard_index = key
        data = self.sources[source]
        shard = data.splits["train"][shard_index]
        docs = data.read(shard)
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
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return joined

    def _schedule(self, step: int) -> None:
        """Start reading the shards of the next steps' slices that are not in memory yet."""
        if self._pool is None:
            return
        ahead = [self.rank_windows(s) for s in range(step + 1, step + 1 + self.read_ahead)]
        keys = {tuple(int(x) for x in row[:3]) for rows in ahead for row in rows}
        with self._lock:
            for key in sorted(keys - self._cache.keys() - self._pending.keys()):
                self._pending[key] = self._pool.submit(self._load, key)

    def next_batch(self, batch: int | None = None) -> torch.Tensor:
        """The next micro-batch of this rank: [micro_batch, ctx_len+1] token ids."""
        if batch not in (None, self.micro_batch):
            raise ValueError(f"micro-batches hold train.micro_batch={self.micro_batch} windows, not {batch}")
        if self.micro == 0:
            self._slice = self.rank_windows(self.step)
            self._schedule(self.step)
        rows = self._slice[self.micro * self.micro_batch:(self.micro + 1) * self.micro_batch]
        tokens = np.stack([self._joined(tuple(int(x) for x in row[:3]))[
            row[3] * self.ctx_len:row[3] * self.ctx_len + self.ctx_len + 1] for row in rows]).astype(np.int64)
        self._log.write(self.step + 1, self.micro, rows, tokens)
        self.micro += 1
        if self.micro == self.grad_accum:
            self.step, self.micro = self.step + 1, 0
        return torch.from_numpy(tokens)

    def tokens_by_source(self, steps: int) -> dict[str, int]:
        """Target tokens each source has given over the first `steps` global batches."""
        taken = self.mixture.taken(steps * self.global_batch)
        return {name: int(n) * self.ctx_len for name, n in zip(self.names, taken)}

    def state_dict(self) -> dict:
        """The position (global windows consumed) and what it is a position in; no rank in it."""
        return {"windows": self.step * self.global_batch + self.micro * self.micro_batch * self.world,
                "global_batch": self.global_batch, "ctx_len": self.ctx_len, "seed": self.seed,
                "shuffle": self.shuffle, "buffer": self.buffer,
                "sources": [[d.manifest_sha256, o.per_epoch] for d, o in zip(self.sources, self.orders)],
                "weights": self.mixture.quota.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if "windows" not in state:
            raise PipelineError("the saved loader position is from the per-rank loader of an older "
                             "version; start a new run (train.init_from=<this run>) to keep its weights")
        mine = self.state_dict()
        if state["global_batch"] != self.global_batch:
            raise PipelineError(
                f"the checkpoint was written with global batches of {state['global_batch']} windows, "
                f"this run's are {self.global_batch} (micro_batch x grad_accum x {self.world} ranks): "
                "resume with the same number of ranks, or set train.global_batch when a run starts so "
                "that it can resume on any number of ranks that divides it")
        for key in ("ctx_len", "seed", "shuffle", "buffer", "sources", "weights"):
            if state[key] != mine[key]:
                raise PipelineError(
                    f"the saved loader position belongs to another global order ({key}: {state[key]} "
                    f"then, {mine[key]} now): resume with the data and settings it was written with")
        if state["windows"] % self.global_batch:
            raise PipelineError(f"the saved loader position ({state['windows']} windows) is inside a "
                             f"global batch of {self.global_batch}")
        self.step, self.micro = state["windows"] // self.global_batch, 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
