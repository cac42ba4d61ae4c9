"""GOLD time mix: softmax attention whose keys and values come from the shared cache, not the stream."""
from __future__ import annotations

import torch
from torch import nn

from .attention import causal_attention
from .config import ModelConfig
from .rope import apply_rope
from .token_mixing import DDLerp, TanhLoRA, token_shift


class GoldTimeMix(nn.Module):
    """q from the block input; k from the compressed-cache keys, v from e = rms_norm(LN0(emb)).

    q is a ddlerp of the block input. The k and v mixing amounts both come from ONE ddlerp LoRA
    over e (`kv_mix`: its mu_x is the reference's `time_maa_v_cache`), and are then applied to
    k_cache and e, each lerped with its own token shift. k and v get a tanh-LoRA residual; LayerNorm
    on q, k, v; RoPE only when model.gold_rope_theta is set (the paper's main config has no
    position encoding in GOLD: the recurrent blocks below carry position); causal attention;
    LayerNorm; the output map.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size, self.rope_theta = cfg.n_head, cfg.head_size, cfg.gold_rope_theta
        self.q_mix = DDLerp(d, ("q",), cfg.mix_lora_rank)
        self.kv_mix = DDLerp(d, ("k", "v"), cfg.mix_lora_rank)
        self.query = nn.Linear(d, a, bias=False)
        self.k_lora = TanhLoRA(a, cfg.gold_lora_rank, a)
        self.v_lora = TanhLoRA(d, cfg.gold_lora_rank, a)
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(a), nn.LayerNorm(a), nn.LayerNorm(a)
        self.ln_x = nn.LayerNorm(a)
        self.output = nn.Linear(a, d, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_size).transpose(1, 2)

    def _rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return x if self.rope_theta is None else apply_rope(x, start, self.rope_theta)

    def keys_values(self, k_cache: torch.Tensor, e: torch.Tensor):
        """Keys and values for every cached position (position 0 .. T-1), as [B, H, T, hd]."""
        de = token_shift(e, None) - e
        m = self.kv_mix.amounts(e, de)
        k = k_cache + (token_shift(k_cache, None) - k_cache) * m[..., 0, :]
        v = e + de * m[..., 1, :]
        k = self.ln_k(k + self.k_lora(k))
        v = self.ln_v(v + self.v_lora(v))
        return self._rope(self._heads(k), 0), self._heads(v)

    def queries(self, x: torch.Tensor, shift: torch.Tensor | None, q_start: int) -> torch.Tensor:
        """Queries for x [B, T, C] at positions q_start.., as [B, H, T, hd]."""
        q = self.ln_q(self.query(self.q_mix(x, shift)["q"]))
        return self._rope(self._heads(q), q_start)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
                q_start: int) -> torch.Tensor:
        """x [B, T, C] (layer-normed) holds positions q_start..q_start+T-1 of the sequence."""
        q = self.queries(x, shift, q_start)
        y = causal_attention(q, k, v, q_start).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.output(self.ln_x(y))
