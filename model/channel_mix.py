"""RWKV channel mixes: x060 (Finch, GoldFinch), x070 (RWKV-7) and x052 (Eagle)."""
from __future__ import annotations

import torch
from torch import nn

from .init_schedules import channel_ramp, orthogonal, ratios
from .part import ChannelMixer
from .token_mixing import token_shift


class _ReceptanceGated(ChannelMixer):
    """What x060 and x052 share: out = sigmoid(R x_r) * V(relu(K x_k)^2), 3.5x wide; they differ
    in how x_k and x_r are mixed from x and the token before (and in their tensors' names)."""

    def _add_maps(self, n_embd: int, dim_ffn: int) -> None:
        self.key = nn.Linear(n_embd, dim_ffn, bias=False)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(dim_ffn, n_embd, bias=False)

    @staticmethod
    def default_width(n_embd: int) -> int:
        return int(n_embd * 3.5) // 32 * 32

    def _mixed(self, xk: torch.Tensor, xr: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.receptance(xr)) * self.value(torch.relu(self.key(xk)) ** 2)

    def _reset_maps(self) -> None:
        orthogonal(self.key.weight)
        nn.init.zeros_(self.receptance.weight)
        nn.init.zeros_(self.value.weight)


class ChannelMix(_ReceptanceGated):
    """x060: x_k and x_r are token-shift lerps x + (x_prev − x)·mu."""

    ref_signature = "time_maa_k"

    def __init__(self, n_embd: int, dim_ffn: int):
        super().__init__()
        self.mu_k = nn.Parameter(torch.empty(n_embd))
        self.mu_r = nn.Parameter(torch.empty(n_embd))
        self._add_maps(n_embd, dim_ffn)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        dx = token_shift(x, prev) - x
        return self._mixed(x + dx * self.mu_k, x + dx * self.mu_r)

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        _, r10 = ratios(layer, n_layer)
        amount = 1.0 - channel_ramp(self.mu_k.numel(), self.mu_k.device).pow(r10)
        self.mu_k.copy_(amount)
        self.mu_r.copy_(amount)
        self._reset_maps()

    def ref_rules(self, b, ours: str, ref: str) -> None:
        c = self.mu_k.numel()
        b.same(f"{ours}.mu_k", f"{ref}.time_maa_k", (1, 1, c))
        b.same(f"{ours}.mu_r", f"{ref}.time_maa_r", (1, 1, c))
        for lin in ("key", "receptance", "value"):
            b.same(f"{ours}.{lin}.weight", f"{ref}.{lin}.weight")


class ChannelMixX070(ChannelMixer):
    """x070: out = V(relu(K x_k)^2), 4x wide, one token-shift mix, no receptance."""

    ref_signature = "x_k"

    def __init__(self, n_embd: int, dim_ffn: int):
        super().__init__()
        self.x_k = nn.Parameter(torch.empty(1, 1, n_embd))
        self.key = nn.Linear(n_embd, dim_ffn, bias=False)
        self.value = nn.Linear(dim_ffn, n_embd, bias=False)

    @staticmethod
    def default_width(n_embd: int) -> int:
        return n_embd * 4

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        k = x + (token_shift(x, prev) - x) * self.x_k
        return self.value(torch.relu(self.key(k)) ** 2)

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        _, r10 = ratios(layer, n_layer)
        ramp = channel_ramp(self.x_k.numel(), self.x_k.device)
        self.x_k.copy_((1.0 - ramp.pow(r10 ** 4)).view_as(self.x_k))
        orthogonal(self.key.weight)
        nn.init.zeros_(self.value.weight)


class ChannelMixX052(_ReceptanceGated):
    """x052 (Eagle): RWKV-5's channel mix; its static mixes weigh x itself (x·m + x_prev·(1−m))."""

    ref_signature = "time_mix_k"

    def __init__(self, n_embd: int, dim_ffn: int):
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, n_embd))
        self._add_maps(n_embd, dim_ffn)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        xx = token_shift(x, prev)
        return self._mixed(x * self.time_mix_k + xx * (1 - self.time_mix_k),
                           x * self.time_mix_r + xx * (1 - self.time_mix_r))

    def reset_parameters(self, layer: int, n_layer: int) -> None:
        _, r10 = ratios(layer, n_layer)
        amount = channel_ramp(self.time_mix_k.numel(), self.time_mix_k.device).pow(r10)
        self.time_mix_k.copy_(amount.view_as(self.time_mix_k))
        self.time_mix_r.copy_(amount.view_as(self.time_mix_r))
        self._reset_maps()
