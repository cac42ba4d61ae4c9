"""The paper's Llama attention: fused q/k/v, RoPE over adjacent pairs, a K/V cache for decoding."""
from __future__ import annotations

import torch
from torch import nn

from .attention import causal_attention
from .init_schedules import orthogonal, zero_biases
from .part import TimeMixer
from .rope import apply_rope


class LlamaAttention(TimeMixer):
    family = "attention"
    default_cmix = "swiglu"
    title, signature, ref_signature = "Llama", ("att.qkv.weight",), "wq.weight"

    def __init__(self, cfg, layer: int):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size, self.rope_theta = cfg.n_head, cfg.head_size, cfg.rope_theta
        self.qkv = nn.Linear(d, 3 * a, bias=cfg.att_bias)
        self.output = nn.Linear(a, d, bias=False)

    def forward(self, x: torch.Tensor, st, ctx):
        """This piece's keys and values are used as computed; they are kept for the next piece
        in ctx.store_dtype, the cache's format."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.head_size).permute(2, 0, 3, 1, 4)
        q = apply_rope(q, ctx.start, self.rope_theta)
        k = apply_rope(k, ctx.start, self.rope_theta)
        k_kept, v_kept = k.to(ctx.store_dtype), v.to(ctx.store_dtype)
        if st.k is not None:
            k = torch.cat([st.k.to(k.dtype), k], dim=2)
            v = torch.cat([st.v.to(v.dtype), v], dim=2)
            k_kept, v_kept = torch.cat([st.k, k_kept], dim=2), torch.cat([st.v, v_kept], dim=2)
        y = causal_attention(q, k, v, ctx.start)
        return self.output(y.transpose(1, 2).reshape(b, t, -1)), {"k": k_kept, "v": v_kept}

    @classmethod
    def infer_fields(cls, sd: dict, att: str) -> dict:
        return dict(dim_att=sd[att + "wq.weight"].shape[0])

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        """Every matrix orthogonal with gain 1 (q, k and v each on its own, as three maps)."""
        for part in self.qkv.weight.chunk(3, dim=0):
            nn.init.orthogonal_(part)
        zero_biases(self.qkv)
        orthogonal(self.output.weight)

    def ref_rules(self, b, ours: str, ref: str) -> None:
        a, c = self.output.in_features, self.output.out_features
        b.concatenated(f"{ours}.qkv.weight", tuple(f"{ref}.w{x}.weight" for x in "qkv"), (a, c))
        b.same(f"{ours}.output.weight", f"{ref}.wo.weight")
