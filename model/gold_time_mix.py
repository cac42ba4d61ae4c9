"""GOLD time mix: softmax attention whose keys and values come from the shared cache, not the stream."""
from __future__ import annotations

import torch
from torch import nn

from .attention import causal_attention
from .finch_time_mix import reset_ddlerp
from .init_schedules import ln_x_scale, orthogonal, zero_biases
from .part import TimeMixer
from .rope import apply_rope
from .token_mixing import DDLerp, TanhLoRA, token_shift


class GoldTimeMix(TimeMixer):
    """q from the block input; k from the compressed-cache keys, v from e = rms_norm(LN0(emb)).

    q is a ddlerp of the block input. The k and v mixing amounts both come from ONE ddlerp LoRA
    over e (`kv_mix`: its mu_x is the reference's `time_maa_v_cache`), and are then applied to
    k_cache and e, each lerped with its own token shift. k and v get a tanh-LoRA residual; LayerNorm
    on q, k, v; RoPE only when model.gold_rope_theta is set (the paper's main config has no
    position encoding in GOLD: the recurrent blocks below carry position); causal attention;
    LayerNorm; the output map.
    """

    family = "gold"
    title, signature, ref_signature = "GOLD", ("att.query.weight",), "time_maa_v_cache"

    def __init__(self, cfg, layer: int):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size, self.rope_theta = cfg.n_head, cfg.head_size, cfg.gold_rope_theta
        self.q_mix = DDLerp(d, ("q",), cfg.mix_lora_rank)
        self.kv_mix = DDLerp(d, ("k", "v"), cfg.mix_lora_rank)
        self.query = nn.Linear(d, a, bias=cfg.att_bias)
        self.k_lora = TanhLoRA(a, cfg.gold_lora_rank, a)
        self.v_lora = TanhLoRA(d, cfg.gold_lora_rank, a)
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(a), nn.LayerNorm(a), nn.LayerNorm(a)
        self.ln_x = nn.LayerNorm(a)
        self.output = nn.Linear(a, d, bias=False)

    @classmethod
    def infer_fields(cls, sd: dict, att: str) -> dict:
        return dict(mix_lora_rank=sd[att + "time_maa_q_w1"].shape[1])

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

    def forward(self, x: torch.Tensor, st, ctx):
        """x [B, T, C] (normed) holds the last T positions of the cache in ctx."""
        k, v = self.keys_values(ctx.k_cache, ctx.v_source)
        q_start = k.shape[-2] - x.shape[1]
        q = self.queries(x, st.att_shift, q_start)
        y = causal_attention(q, k, v, q_start).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.output(self.ln_x(y)), {"att_shift": x[:, -1]}

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        reset_ddlerp(self.q_mix, layer, n_layer)
        reset_ddlerp(self.kv_mix, layer, n_layer)
        orthogonal(self.query.weight)
        zero_biases(self.query)
        self.k_lora.reset_parameters()
        self.v_lora.reset_parameters()
        nn.init.zeros_(self.output.weight)
        self.ln_x.weight.fill_(ln_x_scale(layer, n_layer))
        nn.init.zeros_(self.ln_x.bias)

    def ref_rules(self, b, ours: str, ref: str) -> None:
        c = self.query.in_features
        b.same(f"{ours}.q_mix.mu_x", f"{ref}.time_maa_x", (1, 1, c))
        b.same(f"{ours}.q_mix.mu", f"{ref}.time_maa_q", (1, 1, c))
        b.same(f"{ours}.kv_mix.mu_x", f"{ref}.time_maa_v_cache", (1, 1, c))
        b.stacked(f"{ours}.kv_mix.mu", (f"{ref}.time_maa_k", f"{ref}.time_maa_v"), (1, 1, c))
        rank = self.q_mix.lora_b.shape[1]
        b.same(f"{ours}.q_mix.lora_a", f"{ref}.time_maa_q_w1")
        b.same(f"{ours}.q_mix.lora_b", f"{ref}.time_maa_q_w2", (rank, c))
        b.same(f"{ours}.kv_mix.lora_a", f"{ref}.time_maa_kv_w1")
        b.same(f"{ours}.kv_mix.lora_b", f"{ref}.time_maa_kv_w2")
        for lora, name in (("k_lora", "time_key"), ("v_lora", "time_value")):
            b.same(f"{ours}.{lora}.a", f"{ref}.{name}_w1")
            b.same(f"{ours}.{lora}.b", f"{ref}.{name}_w2")
        b.same(f"{ours}.query.weight", f"{ref}.query.weight")
        b.same(f"{ours}.output.weight", f"{ref}.output.weight")
        for ln in ("ln_q", "ln_k", "ln_v", "ln_x"):
            b.layer_norm(f"{ours}.{ln}", f"{ref}.{ln}")
