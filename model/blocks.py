"""One pre-norm residual block for every architecture: x += att(ln1(x)); x += ffn(ln2(x)).

The time mixer and the channel mixer are registered parts (model/parts.py) chosen by the config;
what differs between architectures lives in the parts and in the per-forward context.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .align import AttentionSwap
from .config import ModelConfig
from .parts import CHANNEL_MIXERS, NORMS, TIME_MIXERS
from .state import BlockState

# block.kind per mixer family: the names the freeze selectors use
KIND = {"recurrent": "finch", "gold": "gold", "attention": "llama"}


@dataclass
class ForwardContext:
    """What one forward pass shares across blocks: where the piece starts, the dtype of what the
    state keeps per token, GOLD's key cache and value source, RWKV-7's first-block value."""
    start: int
    store_dtype: torch.dtype
    k_cache: torch.Tensor | None = None
    v_source: torch.Tensor | None = None
    v_first: torch.Tensor | None = None
    align: "AttentionSwap | None" = None  # distillation's align stage (model/align.py)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.mixer = cfg.block_mixer(layer)
        att = TIME_MIXERS[self.mixer]
        self.kind = KIND[att.family]
        norm = NORMS[cfg.norm]
        self.ln1, self.ln2 = norm(cfg.n_embd, cfg.norm_eps), norm(cfg.n_embd, cfg.norm_eps)
        self.att = att(cfg, layer)
        self.ffn = CHANNEL_MIXERS[cfg.channel_mixer](cfg.n_embd, cfg.ffn_width)

    def forward(self, x: torch.Tensor, st: BlockState, ctx: ForwardContext
                ) -> tuple[torch.Tensor, BlockState]:
        h = self.ln1(x)
        att, carry = self.att(h, st, ctx)
        if ctx.align is not None:
            att = ctx.align.swap(self.layer, att)
        x = x + att
        h2 = self.ln2(x)
        x = x + self.ffn(h2, st.ffn_shift)
        return x, BlockState(ffn_shift=h2[:, -1] if self.ffn.uses_shift else None, **carry)

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        self.att.reset_parameters(layer, n_layer)
        self.ffn.reset_parameters(layer, n_layer)
