"""The one model: blocks over the token stream, then (GoldFinch) GOLD blocks fed by one
compressed key cache. With no GOLD blocks it is Finch, RWKV-7, Eagle or the Llama baseline."""
from __future__ import annotations

import torch

from .align import AttentionSwap
from .base import LanguageModel, LossFn
from .blocks import Block, ForwardContext
from .config import ModelConfig
from .kv_compression import KeyCompression, rms_norm
from .state import BlockState, ModelState


class BlockStack(LanguageModel):
    """n_layer blocks, each a registered time mixer and channel mixer (model/parts.py)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.blocks.extend(Block(cfg, i) for i in range(cfg.n_layer))
        self.kv_compression = KeyCompression(cfg) if cfg.n_gold else None

    def forward(self, idx: torch.Tensor, state: ModelState | None = None, last_only: bool = False,
                return_hidden: bool = False, targets: torch.Tensor | None = None,
                align: AttentionSwap | None = None, loss_fn: LossFn | None = None):
        """See LanguageModel; `align` and `loss_fn` are distillation's (model/align.py, output)."""
        state = self.check_input(idx, state)
        n_stream, start = self.cfg.n_layer - self.cfg.n_gold, state.seen
        tokens = idx.to(torch.int32)
        if self.kv_compression is not None and state.tokens is not None:
            tokens = torch.cat([state.tokens, tokens], dim=1)
        emb0 = self.ln0(self.emb(tokens.long()))  # every cached position: GOLD values need them
        x = emb0[:, -idx.shape[1]:]
        ctx = ForwardContext(start, self.stored_dtype(x), align=align)
        new_blocks: list[BlockState] = []
        for block, st in zip(self.blocks[:n_stream], state.blocks[:n_stream]):
            x, st = self.run_block(block, x, st, ctx)
            new_blocks.append(st)

        compressed = None
        if self.kv_compression is not None:
            c = self.kv_compression(x)
            kept = c.to(self.stored_dtype(c))  # the cache format holds only what is carried over
            past = state.compressed
            compressed = kept if past is None else torch.cat([past, kept], dim=1)
            ctx.k_cache = self.kv_compression.keys(
                emb0, c if past is None else torch.cat([past.to(c.dtype), c], dim=1))
            ctx.v_source = rms_norm(emb0)
            x, gold_states = self._gold(x, ctx, state, last_only)
            new_blocks.extend(gold_states)

        new_state = ModelState(self.cfg.arch, state.batch_size, new_blocks, start + idx.shape[1],
                               compressed, tokens if compressed is not None else None)
        return self.output(x, last_only, return_hidden, targets, loss_fn), new_state

    def _gold(self, x: torch.Tensor, ctx: ForwardContext, state: ModelState, last_only: bool):
        """Run the GOLD blocks over x (positions state.seen..), or only over the tail it needs.

        With last_only, block j's output at the last position needs its input at the last two
        positions (the time mix and the channel mix each shift by one), so the first block runs
        over the last 2·n_gold positions and each later block drops the two it cannot get right.
        Keys and values still span the whole cache: O(T) work for a T-token pre-fill.
        """
        n_stream = self.cfg.n_layer - self.cfg.n_gold
        gold = list(zip(self.blocks[n_stream:], state.blocks[n_stream:]))
        span = 2 * len(gold)
        new_states = []
        if not last_only or x.shape[1] <= span:
            for block, st in gold:
                x, st = self.run_block(block, x, st, ctx)
                new_states.append(st)
            return x, new_states
        prev, x = x[:, -span - 1], x[:, -span:]
        ffn_prev = torch.zeros_like(prev)  # only spoils the first output, which is dropped
        for j, (block, _) in enumerate(gold):
            if j:
                prev, x = x[:, 1], x[:, 2:]
            tail = BlockState(att_shift=block.ln1(prev), ffn_shift=ffn_prev)
            x, st = block(x, tail, ctx)
            new_states.append(st)
        return x, new_states
