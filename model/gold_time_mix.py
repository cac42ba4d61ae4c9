"""GOLD time mix: softmax attention whose keys and values come from the shared cache, not the stream."""
from __future__ import annotations

import torch
from torch import nn

from .attention import causal_attention
from .config import ModelConfig
from .rope import apply_rope
from .token_mixing import DDLerp, TanhLoRA


class GoldTimeMix(nn.Module):
    """q from the block input; k from the compressed-cache keys, v from the normed embeddings.

    Each source is token-shifted and mixed (ddlerp), k and v get a tanh-LoRA residual, then
    LayerNorm on q, k, v, RoPE on q and k, causal attention, LayerNorm and the output map.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size, self.rope_theta = cfg.n_head, cfg.head_size, cfg.rope_theta
        self.q_mix = DDLerp(d, ("q",), cfg.mix_lora_rank)
        self.k_mix = DDLerp(a, ("k",), cfg.mix_lora_rank)
        self.v_mix = DDLerp(d, ("v",), cfg.mix_lora_rank)
        self.query = nn.Linear(d, a, bias=False)
        self.k_lora = TanhLoRA(a, cfg.gold_lora_rank, a)
        self.v_lora = TanhLoRA(d, cfg.gold_lora_rank, a)
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(a), nn.LayerNorm(a), nn.LayerNorm(a)
        self.ln_x = nn.LayerNorm(a)
        self.output = nn.Linear(a, d, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_size).transpose(1, 2)

    def keys_values(self, k_cache: torch.Tensor, v_src: torch.Tensor):
        """Keys and values for every cached position (position 0 .. T-1), as [B, H, T, hd]."""
        k = self.k_mix(k_cache, None)["k"]
        v = self.v_mix(v_src, None)["v"]
        k = self.ln_k(k + self.k_lora(k))
        v = self.ln_v(v + self.v_lora(v))
        return apply_rope(self._heads(k), 0, self.rope_theta), self._heads(v)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
                q_start: int) -> torch.Tensor:
        """x [B, T, C] (layer-normed) holds positions q_start..q_start+T-1 of the sequence."""
        q = self.ln_q(self.query(self.q_mix(x, shift)["q"]))
        q = apply_rope(self._heads(q), q_start, self.rope_theta)
        y = causal_attention(q, k, v, q_start).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.output(self.ln_x(y))
