"""Pre-norm residual blocks: x += time_mix(LN1(x)); x += channel_mix(LN2(x))."""
from __future__ import annotations

import torch
from torch import nn

from .attention import causal_attention
from .channel_mix import ChannelMix, SwiGLU
from .config import ModelConfig
from .gold_time_mix import GoldTimeMix
from .mixers import time_mixer
from .rope import apply_rope
from .state import BlockState


class FinchBlock(nn.Module):
    """A recurrent block: its time mix is the registered mixer `mixer` (model/mixers.py), RWKV-6
    for the Finch baseline and the upgrade architecture, Finch-C2 for GoldFinch's lower layers."""

    kind = "finch"

    def __init__(self, cfg: ModelConfig, mixer: str):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.att = time_mixer(mixer)(cfg)
        self.ffn = ChannelMix(cfg.n_embd, cfg.ffn_width)

    def forward(self, x: torch.Tensor, st: BlockState) -> tuple[torch.Tensor, BlockState]:
        h = self.ln1(x)
        att, wkv = self.att(h, st.att_shift, st.wkv)
        x = x + att
        h2 = self.ln2(x)
        x = x + self.ffn(h2, st.ffn_shift)
        return x, BlockState(att_shift=h[:, -1], ffn_shift=h2[:, -1], wkv=wkv)


class GoldBlock(nn.Module):
    """GOLD block: attention over keys/values regenerated from the shared compressed cache."""

    kind = "gold"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.att = GoldTimeMix(cfg)
        self.ffn = ChannelMix(cfg.n_embd, cfg.ffn_width)

    def forward(self, x: torch.Tensor, st: BlockState, k: torch.Tensor, v: torch.Tensor,
                q_start: int) -> tuple[torch.Tensor, BlockState]:
        h = self.ln1(x)
        x = x + self.att(h, st.att_shift, k, v, q_start)
        h2 = self.ln2(x)
        x = x + self.ffn(h2, st.ffn_shift)
        return x, BlockState(att_shift=h[:, -1], ffn_shift=h2[:, -1])


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size, self.rope_theta = cfg.n_head, cfg.head_size, cfg.rope_theta
        self.qkv = nn.Linear(d, 3 * a, bias=False)
        self.output = nn.Linear(a, d, bias=False)

    def forward(self, x: torch.Tensor, st: BlockState, start: int, cache_dtype: torch.dtype):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.head_size).permute(2, 0, 3, 1, 4)
        q = apply_rope(q, start, self.rope_theta)
        k = apply_rope(k, start, self.rope_theta).to(cache_dtype)
        v = v.to(cache_dtype)
        if st.k is not None:
            k, v = torch.cat([st.k, k], dim=2), torch.cat([st.v, v], dim=2)
        y = causal_attention(q, k.to(q.dtype), v.to(q.dtype), start)
        return self.output(y.transpose(1, 2).reshape(b, t, -1)), k, v


class LlamaBlock(nn.Module):
    """The paper's Llama block: LayerNorm (with bias) pre-norms, RoPE attention, SwiGLU."""

    kind = "llama"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.att = LlamaAttention(cfg)
        self.ffn = SwiGLU(cfg.n_embd, cfg.ffn_width)

    def forward(self, x: torch.Tensor, st: BlockState, start: int,
                cache_dtype: torch.dtype) -> tuple[torch.Tensor, BlockState]:
        att, k, v = self.att(self.ln1(x), st, start, cache_dtype)
        x = x + att
        x = x + self.ffn(self.ln2(x))
        return x, BlockState(k=k, v=v)
