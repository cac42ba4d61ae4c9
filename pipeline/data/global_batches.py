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

import numpy as np
import torch

from common.errors import UserError

from ..errors import PipelineError
from ..instruments import Instruments
from .mixture import Mixture
from .order import SourceOrder
from .windows import WindowReader


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
                raise UserError(f"model.ctx_len={ctx_len}: no train shard of {data.path} holds a "
                                f"whole {ctx_len + 1}-token window")
        self.mixture = Mixture(weights, seed)
        self.step = self.micro = 0
        self._slice: np.ndarray | None = None
        # two shuffle buffers per source: the current group's shards and the next one's
        self.reader = WindowReader(sources, "train", self.orders, ctx_len,
                                   2 * max(buffer, 1) * len(sources) + 2, read_ahead=bool(read_ahead))
        self.instruments = Instruments()  # the trainer's, which may watch the batches

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

    def _schedule(self, step: int) -> None:
        """Start reading the shards of the next steps' slices that are not in memory yet."""
        ahead = [self.rank_windows(s) for s in range(step + 1, step + 1 + self.read_ahead)]
        self.reader.read_ahead({tuple(int(x) for x in row[:3]) for rows in ahead for row in rows})

    def next_batch(self, batch: int | None = None) -> torch.Tensor:
        """The next micro-batch of this rank: [micro_batch, ctx_len+1] token ids."""
        if batch not in (None, self.micro_batch):
            raise ValueError(f"micro-batches hold train.micro_batch={self.micro_batch} windows, not {batch}")
        if self.micro == 0:
            self._slice = self.rank_windows(self.step)
            self._schedule(self.step)
        rows = self._slice[self.micro * self.micro_batch:(self.micro + 1) * self.micro_batch]
        tokens = self.reader.windows(rows)
        self.instruments.batch(self.step + 1, self.micro, rows, tokens)
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
        self.reader.close()
