"""Which source each window of the global order comes from, for `data.mix`.

The global order is cut into blocks of BLOCK windows. Every block holds each source's fixed quota
(its weight times BLOCK, rounded by largest remainder so the quotas fill the block) in a seeded
order of its own. Shares are therefore exact to within one block at any point of the run, and
the number of windows a source has given up to global window n is plain arithmetic: a resume
needs no state beyond n, and no rank has to replay the choices of the others.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .order import seeded

BLOCK = 1000
MIX = 1 << 20  # keeps the mixture's random streams apart from every source's


def quotas(weights: list[float], block: int = BLOCK) -> np.ndarray:
    """Windows per block for each source: weight shares of `block`, by largest remainder."""
    w = np.asarray(weights, dtype=np.float64)
    exact = w / w.sum() * block
    out = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - out), kind="stable")[: block - int(out.sum())]:
        out[i] += 1
    return out


class Mixture:
    """Global window n -> (source, that source's own window counter)."""

    def __init__(self, weights: list[float], seed: int, block: int = BLOCK):
        self.seed, self.block = seed, block
        self.quota = quotas(weights, block)
        self._blocks: OrderedDict = OrderedDict()

    def _pattern(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each window in block b, how many of that source came before it in b)."""
        if b not in self._blocks:
            sources = np.repeat(np.arange(len(self.quota)), self.quota)
            if len(self.quota) > 1:
                sources = sources[seeded(self.seed, MIX, b).permutation(self.block)]
            before = np.empty(self.block, dtype=np.int64)
            for s in range(len(self.quota)):
                at = np.flatnonzero(sources == s)
                before[at] = np.arange(len(at))
            self._blocks[b] = (sources, before)
            while len(self._blocks) > 8:
                self._blocks.popitem(last=False)
        return self._blocks[b]

    def assign(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(sources, counters) of global windows [start, stop)."""
        n = np.arange(start, stop, dtype=np.int64)
        blocks, pos = np.divmod(n, self.block)
        sources, counters = np.empty_like(n), np.empty_like(n)
        for b in np.unique(blocks):
            sel = blocks == b
            src, before = self._pattern(int(b))
            sources[sel] = src[pos[sel]]
            counters[sel] = int(b) * self.quota[src[pos[sel]]] + before[pos[sel]]
        return sources, counters

    def taken(self, n: int) -> np.ndarray:
        """Windows each source has given among global windows [0, n)."""
        b, rest = divmod(n, self.block)
        counts = b * self.quota
        if rest:
            counts = counts + np.bincount(self._pattern(b)[0][:rest], minlength=len(self.quota))
        return counts
