"""RWKV's layer-dependent initialisation schedules, shared by the parts that follow them."""
from __future__ import annotations

import math

import torch
from torch import nn


def ratios(layer: int, n_layer: int) -> tuple[float, float]:
    """(0 -> 1 with depth, 1 -> ~0 with depth): RWKV's `ratio_0_to_1`, `ratio_1_to_almost0`."""
    return layer / max(n_layer - 1, 1), 1.0 - layer / n_layer


def channel_ramp(dim: int, device) -> torch.Tensor:
    """i / dim for every channel: the `ddd` the token-shift schedules raise to a power."""
    return torch.arange(dim, device=device, dtype=torch.float32) / dim


def orthogonal(weight: torch.Tensor, gain: float = 1.0) -> None:
    nn.init.orthogonal_(weight, gain=gain)


def orthogonal_scaled(weight: torch.Tensor, scale: float) -> None:
    """RWKV-7's `ortho_init`: orthogonal, with the gain raised by sqrt(rows/cols) when tall."""
    rows, cols = weight.shape
    gain = math.sqrt(rows / cols) if rows > cols else 1.0
    nn.init.orthogonal_(weight, gain=gain * scale)


def ln_x_scale(layer: int, n_layer: int) -> float:
    """The time mix's output-norm weight: ((layer+1)/L)^0.7."""
    return ((layer + 1) / n_layer) ** 0.7


def zero_biases(*linears: nn.Module) -> None:
    """The q/k/v-like maps' biases (model.att_bias) start at zero, where no bias is."""
    for lin in linears:
        if lin.bias is not None:
            nn.init.zeros_(lin.bias)
