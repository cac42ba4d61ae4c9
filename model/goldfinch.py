"""GoldFinch (Finch-C2 blocks, then GOLD blocks fed by one compressed key cache) and Finch."""
from __future__ import annotations

import torch

from .base import LanguageModel
from .blocks import FinchBlock, GoldBlock
from .config import ModelConfig
from .kv_compression import KeyCompression, rms_norm
from .state import BlockState, ModelState


class GoldFinch(LanguageModel):
    """arch "goldfinch": n_finch recurrent blocks (Finch-C2, or RWKV-6 with model.lower=finch)
    + n_gold GOLD blocks; arch "finch": recurrent blocks only (RWKV-6, or Finch-C2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.blocks.extend(FinchBlock(cfg, cfg.lower_mixer) for _ in range(cfg.n_finch))
        self.blocks.extend(GoldBlock(cfg) for _ in range(cfg.n_gold))
        self.kv_compression = KeyCompression(cfg) if cfg.n_gold else None

    def forward(self, idx: torch.Tensor, state: ModelState | None = None, last_only: bool = False,
                return_hidden: bool = False, targets: torch.Tensor | None = None):
        state = self.check_input(idx, state)
        n_finch, start = self.cfg.n_finch, state.seen
        new_blocks: list[BlockState] = []

        tokens = idx.to(torch.int32)
        if self.kv_compression is not None and state.tokens is not None:
            tokens = torch.cat([state.tokens, tokens], dim=1)
        emb0 = self.ln0(self.emb(tokens.long()))  # every cached position: GOLD values need them
        x = emb0[:, -idx.shape[1]:]
        for block, st in zip(self.blocks[:n_finch], state.blocks[:n_finch]):
            x, st = self.run_block(block, x, st)
            new_blocks.append(st)

        compressed = None
        if self.kv_compression is not None:
            c = self.kv_compression(x)
            c = c.to(self.stored_dtype(c))
            compressed = c if state.compressed is None else torch.cat([state.compressed, c], dim=1)
            x, gold_states = self._gold(x, emb0, compressed, state, last_only)
            new_blocks.extend(gold_states)

        new_state = ModelState(self.cfg.arch, state.batch_size, new_blocks, start + idx.shape[1],
                               compressed, tokens if compressed is not None else None)
        return self.output(x, last_only, return_hidden, targets), new_state

    def _gold(self, x: torch.Tensor, emb0: torch.Tensor, compressed: torch.Tensor,
              state: ModelState, last_only: bool):
        """Run the GOLD blocks over x (positions state.seen..), or only over the tail it needs.

        With last_only, block j's output at the last position needs its input at the last two
        positions (the time mix and the channel mix each shift by one), so the first block runs
        over the last 2·n_gold positions and each later block drops the two it cannot get right.
        Keys and values still span the whole cache: O(T) work for a T-token pre-fill.
        """
        k_cache = self.kv_compression.keys(emb0, compressed)
        v_src = rms_norm(emb0)
        gold = list(zip(self.blocks[self.cfg.n_finch:], state.blocks[self.cfg.n_finch:]))
        total = compressed.shape[1]
        span = 2 * len(gold)
        new_states = []
        if not last_only or x.shape[1] <= span:
            for block, st in gold:
                k, v = block.att.keys_values(k_cache, v_src)
                x, st = self.run_block(block, x, st, k, v, q_start=total - x.shape[1])
                new_states.append(st)
            return x, new_states
        prev, x = x[:, -span - 1], x[:, -span:]
        ffn_prev = torch.zeros_like(prev)  # only spoils the first output, which is dropped
        for j, (block, _) in enumerate(gold):
            if j:
                prev, x = x[:, 1], x[:, 2:]
            k, v = block.att.keys_values(k_cache, v_src)
            tail = BlockState(att_shift=block.ln1(prev), ffn_shift=ffn_prev)
            x, st = block(x, tail, k, v, q_start=total - x.shape[1])
            new_states.append(st)
        return x, new_states
