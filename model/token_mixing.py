"""Token shift and the data-dependent interpolation (ddlerp) shared by Finch and GOLD blocks."""
from __future__ import annotations

import torch
from torch import nn


def token_shift(x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """x_{t-1} for every t of x [B, T, C]; `prev` [B, C] is the position before x (zeros if None)."""
    first = torch.zeros_like(x[:, :1]) if prev is None else prev.unsqueeze(1).to(x.dtype)
    return torch.cat([first, x[:, :-1]], dim=1)


class TanhLoRA(nn.Module):
    """x -> tanh(x A) B: a low-rank, bounded, data-dependent offset."""

    def __init__(self, dim_in: int, rank: int, dim_out: int):
        super().__init__()
        self.a = nn.Parameter(torch.empty(dim_in, rank))
        self.b = nn.Parameter(torch.empty(rank, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.a) @ self.b

    def reset_parameters(self) -> None:
        """A zero, B uniform ±0.01: the offset starts at zero but can learn."""
        nn.init.zeros_(self.a)
        nn.init.uniform_(self.b, -0.01, 0.01)


class DDLerp(nn.Module):
    """Data-dependent lerp between x_t and x_{t-1}, one output per name.

    dx = x_{t-1} - x_t; a rank-r tanh LoRA on x + dx*mu_x gives per-output amounts m_i, and
    output i is x + dx*(mu_i + m_i). Finch uses it for r/k/v/w/(g or v2), GOLD for q; GOLD's k/v
    take only the amounts (`amounts`) and apply them to other sources.
    """

    def __init__(self, dim: int, names: tuple[str, ...], rank: int):
        super().__init__()
        self.names = names
        self.mu_x = nn.Parameter(torch.empty(dim))
        self.mu = nn.Parameter(torch.empty(len(names), dim))
        self.lora_a = nn.Parameter(torch.empty(dim, len(names) * rank))
        self.lora_b = nn.Parameter(torch.empty(len(names), rank, dim))

    def amounts(self, x: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        """mu_i + m_i for every name, as [B, T, n_names, C]."""
        n, rank = len(self.names), self.lora_b.shape[1]
        h = torch.tanh((x + dx * self.mu_x) @ self.lora_a)
        return self.mu + torch.einsum("btnr,nrc->btnc", h.view(*x.shape[:2], n, rank), self.lora_b)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        dx = token_shift(x, prev) - x
        m = self.amounts(x, dx)
        return {name: x + dx * m[..., i, :] for i, name in enumerate(self.names)}
