"""The windows of one data dir, in a seeded order that is a pure function of its manifest.

Windows are formed per shard: the shard's documents (in a seeded per-epoch order) joined with
end-of-text, cut into ctx_len+1-token windows that overlap by one token (every token is a target
once). How many windows a shard holds follows from the manifest's `tokens` and `samples` alone,
so the whole order can be laid out without reading a byte of data: each epoch permutes the
shards, takes them `buffer` at a time (the shuffle buffer) and shuffles the windows of those
shards together, so consecutive windows come from several shards. Window number c of the source
is found by arithmetic; a position in the order is one integer, whatever the number of ranks.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

SHARDS, GROUP, DOCS = 0, 1, 2  # what a seeded random stream is for (part of its key)


def seeded(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for every (seed, key): no stream depends on another's use."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def shard_windows(tokens: int, samples: int, ctx_len: int) -> int:
    """Windows in a shard of `samples` documents and `tokens` tokens (plus one end-of-text each)."""
    return max(0, (tokens + samples - 1) // ctx_len)


class SourceOrder:
    """Window c (counting from the first epoch) of one source -> (epoch, shard, window in shard)."""

    def __init__(self, shards, ctx_len: int, seed: int, source: int = 0, shuffle: bool = True,
                 buffer: int = 4):
        self.ctx_len, self.seed, self.source, self.shuffle = ctx_len, seed, source, shuffle
        self.buffer = max(1, buffer)
        self.windows = np.array([shard_windows(s.tokens, s.samples, ctx_len) for s in shards],
                                dtype=np.int64)
        self.per_epoch = int(self.windows.sum())
        self._groups: OrderedDict = OrderedDict()  # (epoch, group) -> (shards, windows) arrays
        self._epochs: OrderedDict = OrderedDict()  # epoch -> (groups, group starts)

    def _key(self, *key: int) -> tuple[int, ...]:
        return (self.source, *key)

    def shard_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.windows))
        return seeded(self.seed, *self._key(SHARDS, epoch)).permutation(len(self.windows))

    def doc_order(self, epoch: int, shard: int, samples: int) -> np.ndarray:
        """The order a shard's documents are joined in for an epoch."""
        if not self.shuffle:
            return np.arange(samples)
        return seeded(self.seed, *self._key(DOCS, epoch, shard)).permutation(samples)

    def _epoch(self, epoch: int):
        if epoch not in self._epochs:
            order = self.shard_order(epoch)
            groups = [order[i:i + self.buffer] for i in range(0, len(order), self.buffer)]
            starts = np.cumsum([0] + [int(self.windows[g].sum()) for g in groups])
            self._epochs[epoch] = (groups, starts)
            while len(self._epochs) > 4:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def _group(self, epoch: int, index: int):
        """(shard, window) arrays of one shuffle-buffer group, in the order they are taken."""
        key = (epoch, index)
        if key not in self._groups:
            groups, _ = self._epoch(epoch)
            members = groups[index]
            shards = np.repeat(members, self.windows[members])
            windows = np.concatenate([np.arange(self.windows[m]) for m in members])
            if self.shuffle:
                perm = seeded(self.seed, *self._key(GROUP, epoch, index)).permutation(len(shards))
                shards, windows = shards[perm], windows[perm]
            self._groups[key] = (shards, windows)
            while len(self._groups) > 8:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return self._groups[key]

    def locate(self, counters: np.ndarray) -> np.ndarray:
        """[n, 3] int64 rows (epoch, shard, window in shard) for the source's window numbers."""
        counters = np.asarray(counters, dtype=np.int64)
        out = np.empty((len(counters), 3), dtype=np.int64)
        epochs, offsets = np.divmod(counters, self.per_epoch)
        out[:, 0] = epochs
        for epoch in np.unique(epochs):
            at = np.flatnonzero(epochs == epoch)
            _, starts = self._epoch(int(epoch))
            group_of = np.searchsorted(starts, offsets[at], side="right") - 1
            for group in np.unique(group_of):
                sel = at[group_of == group]
                shards, windows = self._group(int(epoch), int(group))
                local = offsets[sel] - starts[group]
                out[sel, 1], out[sel, 2] = shards[local], windows[local]
        return out
