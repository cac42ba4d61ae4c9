"""Finch time mixes: RWKV-6 (the Finch baseline, `finch`) and Finch-C2 (GoldFinch's, `finch_c2`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import wkv6

from .init_schedules import channel_ramp, ln_x_scale, orthogonal, ratios, zero_biases
from .part import TimeMixer
from .rope import rope_tokens
from .token_mixing import DDLerp, TanhLoRA


def lerp_amounts(dim: int, layer: int, n_layer: int, device) -> dict[str, torch.Tensor]:
    """RWKV-6's token-shift amounts per ddlerp slot (GOLD's q, k, v follow them too)."""
    r01, r10 = ratios(layer, n_layer)
    ddd = channel_ramp(dim, device)
    base, half = 1.0 - ddd.pow(r10), 1.0 - ddd.pow(0.5 * r10)
    value = 1.0 - (ddd.pow(r10) + 0.3 * r01)
    return {"x": base, "r": half, "g": half, "q": half, "k": base, "w": base, "v": value, "v2": value}


def reset_ddlerp(mix: DDLerp, layer: int, n_layer: int) -> None:
    amounts = lerp_amounts(mix.mu_x.numel(), layer, n_layer, mix.mu_x.device)
    mix.mu_x.copy_(amounts["x"])
    for i, name in enumerate(mix.names):
        mix.mu[i].copy_(amounts[name])
    nn.init.zeros_(mix.lora_a)
    nn.init.uniform_(mix.lora_b, -0.01, 0.01)


def bonus_schedule(n_head: int, head_size: int, layer: int, n_layer: int, device) -> torch.Tensor:
    r01, _ = ratios(layer, n_layer)
    n = torch.arange(n_head * head_size, device=device, dtype=torch.float32)
    frac = n / max(n.numel() - 1, 1)
    return (r01 * (1.0 - frac) + ((n + 1) % 3 - 1) * 0.1).view(n_head, head_size)


def decay_schedule(width: int, layer: int, n_layer: int, device) -> torch.Tensor:
    r01, _ = ratios(layer, n_layer)
    n = torch.arange(width, device=device, dtype=torch.float32)
    return -6.0 + 5.0 * (n / max(width - 1, 1)).pow(0.7 + 1.3 * r01)


class _FinchFamily(TimeMixer):
    """What both share: a five-way ddlerp, r/k/v maps, a data-dependent log-log decay, WKV6."""

    slots: tuple[str, ...] = ()
    ref_slots: tuple[str, ...] = ()  # the reference's order of the same slots

    def __init__(self, cfg, layer: int):
        super().__init__()
        d, a = cfg.n_embd, cfg.att_width
        self.n_head, self.head_size = cfg.n_head, cfg.head_size
        self.rope_theta = cfg.rk_rope_theta
        self.mix = DDLerp(d, self.slots, cfg.mix_lora_rank)
        self.receptance = nn.Linear(d, a, bias=cfg.att_bias)
        self.key = nn.Linear(d, a, bias=cfg.att_bias)
        self.value = nn.Linear(d, a, bias=cfg.att_bias)
        self.output = nn.Linear(a, d, bias=False)
        self.decay_base = nn.Parameter(torch.empty(a))
        self.decay_lora = TanhLoRA(d, cfg.decay_lora_rank, a)

    def receptance_key(self, m: dict, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """r and k, rotated for their absolute positions when model.rk_rope_theta is set."""
        r, k = self.receptance(m["r"]), self.key(m["k"])
        return (rope_tokens(r, self.n_head, start, self.rope_theta),
                rope_tokens(k, self.n_head, start, self.rope_theta))

    def _wkv(self, r, k, v, w, u, wkv_state):
        b, t, _ = r.shape
        heads = (b, t, self.n_head, self.head_size)
        y, wkv_state = wkv6(r.view(heads), k.view(heads), v.view(heads), w.view(heads), u,
                            state=wkv_state)
        return y.reshape(b, t, -1), wkv_state

    @classmethod
    def infer_fields(cls, sd: dict, att: str) -> dict:
        n_head, head_size = sd[att + "time_faaaa"].shape
        return dict(head_size=head_size, dim_att=n_head * head_size,
                    mix_lora_rank=sd[att + "time_maa_w2"].shape[1],
                    decay_lora_rank=sd[att + "time_decay_w1"].shape[1])

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        reset_ddlerp(self.mix, layer, n_layer)
        orthogonal(self.receptance.weight)
        orthogonal(self.key.weight, 0.1)
        orthogonal(self.value.weight)
        zero_biases(self.receptance, self.key, self.value)
        nn.init.zeros_(self.output.weight)
        self.decay_base.copy_(decay_schedule(self.decay_base.numel(), layer, n_layer,
                                             self.decay_base.device))
        self.decay_lora.reset_parameters()
        self.ln_x.weight.fill_(ln_x_scale(layer, n_layer))
        nn.init.zeros_(self.ln_x.bias)

    def ref_rules(self, b, ours: str, ref: str) -> None:
        b.ddlerp(f"{ours}.mix", ref, self.ref_slots, self.slots, b_first=self.lora_b_first)
        b.same(f"{ours}.decay_base", f"{ref}.time_decay", (1, 1, self.decay_base.numel()))
        b.same(f"{ours}.decay_lora.a", f"{ref}.time_decay_w1")
        b.same(f"{ours}.decay_lora.b", f"{ref}.time_decay_w2")
        self.own_ref_rules(b, ours, ref)
        for lin in self.linears:
            b.same(f"{ours}.{lin}.weight", f"{ref}.{lin}.weight")
        b.layer_norm(f"{ours}.ln_x", f"{ref}.ln_x")


class FinchTimeMix(_FinchFamily):
    """RWKV-6: y = GroupNorm(wkv6(r, k, v, w, u)) * silu(g), with the bonus u."""

    slots = ("r", "k", "v", "w", "g")
    ref_slots = ("w", "k", "v", "r", "g")
    lora_b_first = False
    linears = ("receptance", "key", "value", "gate", "output")
    title, signature, ref_signature = "RWKV-6", ("att.gate.weight", "att.mix.mu"), "time_maa_g"

    def __init__(self, cfg, layer: int):
        super().__init__(cfg, layer)
        self.bonus = nn.Parameter(torch.empty(self.n_head, self.head_size))
        self.gate = nn.Linear(cfg.n_embd, cfg.att_width, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, cfg.att_width, eps=64e-5)

    def forward(self, x: torch.Tensor, st, ctx):
        """x [B, T, C] (already normed) -> (out, the new token shift and WKV state)."""
        m = self.mix(x, st.att_shift)
        w = self.decay_base + self.decay_lora(m["w"])
        r, k = self.receptance_key(m, ctx.start)
        y, wkv_state = self._wkv(r, k, self.value(m["v"]), w, self.bonus, st.wkv)
        b, t, a = y.shape
        y = self.ln_x(y.reshape(b * t, a)).view(b, t, a) * F.silu(self.gate(m["g"]))
        return self.output(y), {"att_shift": x[:, -1], "wkv": wkv_state}

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        super().reset_parameters(layer, n_layer)
        self.bonus.copy_(bonus_schedule(self.n_head, self.head_size, layer, n_layer,
                                        self.bonus.device))
        orthogonal(self.gate.weight, 0.1)

    def own_ref_rules(self, b, ours: str, ref: str) -> None:
        b.same(f"{ours}.bonus", f"{ref}.time_faaaa")


class FinchC2TimeMix(_FinchFamily):
    """Finch-C2: keys scaled by (1 - decay), no bonus, and a second value v2 added to the WKV
    output before a LayerNorm: y = LN(wkv6(r, k*(1-decay), v, w, 0) + v2)."""

    slots = ("r", "k", "v", "w", "v2")
    ref_slots = ("r", "k", "v", "w", "v2")
    lora_b_first = True  # the reference registers its ddlerp LoRA's B before A
    linears = ("receptance", "key", "value", "output")
    title, signature, ref_signature = "Finch-C2", ("att.v2_lora.a",), "time_value2_w1"

    def __init__(self, cfg, layer: int):
        super().__init__(cfg, layer)
        self.one_minus_w, self.use_v2 = cfg.c2_one_minus_w, cfg.c2_v2
        self.v2_lora = TanhLoRA(cfg.n_embd, cfg.decay_lora_rank, cfg.att_width)
        self.ln_x = nn.LayerNorm(cfg.att_width)
        bonus = torch.zeros(self.n_head, self.head_size)
        if self.use_v2:
            # Never read: the reference keeps a bonus tensor in Finch-C2 too; holding it lets its
            # checkpoints convert in and back out unchanged.
            self.register_buffer("unused_bonus", bonus)
        else:  # the no_v2 ablation trains the bonus as RWKV-6 does
            self.bonus = nn.Parameter(bonus)

    def forward(self, x: torch.Tensor, st, ctx):
        m = self.mix(x, st.att_shift)
        w = self.decay_base + self.decay_lora(m["w"])
        r, k = self.receptance_key(m, ctx.start)
        if self.one_minus_w:
            k = k * -torch.expm1(-torch.exp(w))  # one minus the per-channel decay
        u = None if self.use_v2 else self.bonus
        y, wkv_state = self._wkv(r, k, self.value(m["v"]), w, u, st.wkv)
        if self.use_v2:
            y = y + self.value(m["v2"]) + self.v2_lora(m["v2"])
        return self.output(self.ln_x(y)), {"att_shift": x[:, -1], "wkv": wkv_state}

    def _bonus(self) -> torch.Tensor:
        return self.unused_bonus if self.use_v2 else self.bonus

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        super().reset_parameters(layer, n_layer)
        self.v2_lora.reset_parameters()
        self._bonus().copy_(bonus_schedule(self.n_head, self.head_size, layer, n_layer,
                                           self._bonus().device))

    def own_ref_rules(self, b, ours: str, ref: str) -> None:
        b.same(f"{ours}.v2_lora.a", f"{ref}.time_value2_w1")
        b.same(f"{ours}.v2_lora.b", f"{ref}.time_value2_w2")
        b.same(f"{ours}.{'unused_bonus' if self.use_v2 else 'bonus'}", f"{ref}.time_faaaa")
