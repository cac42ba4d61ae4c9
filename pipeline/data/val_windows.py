"""Validation windows: a fixed, unshuffled slice of the val split, the same for any number of ranks.

The val windows are the first `count` windows of the val shards (of the run's first source) in
file order: shards and their documents as stored, no shuffle, no seed; a split too small for
`count` is read again from its start. The trainer's count is train.val_batches x the global
batch, so it does not change with the number of ranks either. Rank r scores the r-th contiguous
share (shares differ by at most one window when the ranks do not divide the count) and the ranks
add up their sums of loss x target tokens and of target tokens: val_loss is the same mean over
the same windows for any world size and accumulation. Every rank runs the same number of forward
passes (ZeRO-3 gathers parameters in each one); a rank whose share has run out scores a padding
batch that counts for nothing.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from common.errors import UserError

from .order import SourceOrder, shard_windows
from .windows import WindowReader


def share(count: int, rank: int, world: int) -> range:
    """Window numbers of rank r's contiguous share of `count` windows."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def check_split(data, ctx_len: int) -> None:
    """A val split must hold at least one whole window in one of its shards."""
    shards = data.splits.get("val", [])
    if not any(shard_windows(s.tokens, s.samples, ctx_len) for s in shards):
        raise UserError(f"model.ctx_len={ctx_len}: no val shard of {data.path} holds a whole "
                        f"{ctx_len + 1}-token window ({len(shards)} val shards)")


class ValWindows:
    def __init__(self, data, ctx_len: int, count: int, rank: int = 0, world: int = 1):
        check_split(data, ctx_len)
        self.order = SourceOrder(data.splits["val"], ctx_len, seed=0, shuffle=False, buffer=1)
        self.reader = WindowReader([data], "val", [self.order], ctx_len, capacity=2)
        self.count, self.world, self.mine = count, world, share(count, rank, world)

    def tokens(self, numbers) -> np.ndarray:
        """[n, ctx_len+1] int64 tokens of the val windows with these numbers."""
        rows = np.zeros((len(numbers), 4), dtype=np.int64)
        rows[:, 1:] = self.order.locate(np.asarray(numbers, dtype=np.int64))
        return self.reader.windows(rows)

    def batches(self, micro_batch: int) -> Iterator[tuple[torch.Tensor, bool]]:
        """This rank's micro-batches, and whether each counts (False: padding, see above)."""
        passes = -(-len(share(self.count, 0, self.world)) // micro_batch)  # the largest share's
        for i in range(passes):
            numbers = self.mine[i * micro_batch:(i + 1) * micro_batch]
            yield torch.from_numpy(self.tokens(numbers or range(1))), bool(numbers)


@torch.no_grad()
def summed_loss(forward: Callable[[torch.Tensor], torch.Tensor], val: ValWindows, micro_batch: int,
                device) -> torch.Tensor:
    """fp64 [sum of loss x target tokens, target tokens] over this rank's share; `forward` maps a
    [B, ctx_len+1] batch to its mean next-token loss. Add the ranks' results up, then divide."""
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for batch, counts in val.batches(micro_batch):
        loss = forward(batch.to(device))
        if counts:
            targets = batch[:, 1:].numel()
            sums += torch.stack([loss.detach().double() * targets,
                                 torch.tensor(targets, dtype=torch.float64, device=device)])
    return sums
