"""Launch plan of the WKV7 Triton kernels: supported shapes, tile widths, warps, dot precision.

Kept apart from the launches so that `kernels.compile_check` compiles exactly what runs.
Both kernels own a [K, BV] block of the state (all key channels: the delta rule's a_t S reads
every row) and walk the chunks of one head in order; BV splits the value channels over programs
(the recurrence never mixes value channels). The forward holds its block in registers; the
backward keeps dS in memory and walks the key channels in slices of BK (K = 128 held whole spilled
136-152 bytes in bf16). `Tiles` overrides BV and BK: tests shrink them so that the interpreter
runs the several-tiles-per-head and several-slices paths a GPU runs.

Dots: fp32 inputs get exact fp32 products ("ieee"). Half-precision inputs feed bf16 operands to
the tensor cores with fp32 accumulation (tf32 operands need twice the registers and make every
backward spill); the 16x16 triangular inverse and the solve for u stay exact fp32 either way.
Against fp64, bf16 operands leave errors of 2-3x the bf16 rounding of the outputs themselves
(tests/test_wkv7_triton.py). Tile widths and warps were chosen with `python -m
kernels.compile_check` so that bf16 launches at K = 64 and 128 do not spill (docs/BENCHMARKS.md;
in bf16 BK = 64 spills 24-32 bytes, BK = 16 56); fp32 backward slices spill least at BK = 64 for
K <= 64 and BK = 16 for K = 128.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

HEAD_SIZES = (16, 32, 64, 128)
CHUNK = 16
STAGES = 1  # software pipelining of the chunk loop only adds registers: each chunk is serial
INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# The kernels factor a pair decay exp(g_t - g_s) inside a chunk as exp(g_t) * exp(-g_s), so a
# chunk's cumulative log-decay must stay far from fp32's exp overflow (~88): each step's
# log-decay -exp(w) is floored at LOG_DECAY_FLOOR (decay >= e^-4 ~ 0.018, i.e. w <= log 4),
# 16 steps reach at most e^64. RWKV-7's decays lie in (0.545, 1): the floor never binds there.
LOG_DECAY_FLOOR = -4.0
MAX_W = math.log(-LOG_DECAY_FLOOR)


def triton_supports(k_size: int, dtype: torch.dtype) -> str | None:
    """None if the Triton kernels handle this head size and dtype, else the reason they do not."""
    if k_size not in HEAD_SIZES:
        return f"head size K={k_size} (Triton WKV7 supports {HEAD_SIZES})"
    if dtype not in INPUT_DTYPES:
        return f"dtype {dtype} (Triton WKV7 takes fp32, bf16 or fp16)"
    return None


@dataclass(frozen=True)
class Tiles:
    """Value-tile widths and the backward's key-slice width (powers of two >= 16, at most the
    head size); None keeps the default."""
    fwd_bv: int | None = None
    bwd_bv: int | None = None
    bwd_bk: int | None = None

    def check(self, k: int) -> None:
        for name in ("fwd_bv", "bwd_bv", "bwd_bk"):
            size = getattr(self, name)
            if size is not None and (size < 16 or size & (size - 1) or size > k):
                raise ValueError(f"Tiles.{name}={size}: must be a power of two in [16, {k}]")


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs besides the tensors, for one (H, K, dtype)."""
    h: int
    k: int
    exact_dots: bool
    tiles: Tiles = field(default_factory=Tiles)

    @classmethod
    def make(cls, h: int, k: int, dtype: torch.dtype, tiles: Tiles | None = None):
        tiles = tiles or Tiles()
        tiles.check(k)
        return cls(h, k, exact_dots=dtype == torch.float32, tiles=tiles)

    @property
    def prec(self) -> str:
        return "ieee" if self.exact_dots else "bf16"

    @property
    def fwd_bv(self) -> int:
        return self.tiles.fwd_bv or min(self.k, 64 if self.k <= 64 else 32)

    @property
    def bwd_bv(self) -> int:
        return self.tiles.bwd_bv or min(self.k, 16)

    @property
    def bwd_bk(self) -> int:
        if self.tiles.bwd_bk:
            return self.tiles.bwd_bk
        if self.exact_dots:  # fp32 dots at BK = 32 fall to 32 registers and a 3 KB stack
            return min(self.k, 64 if self.k <= 64 else 16)
        return min(self.k, 32)

    def n_chunks(self, t: int) -> int:
        return -(-t // CHUNK)

    def forward(self, batch: int, **flags):
        """(grid, constexprs) of wkv7_fwd_kernel (flags HAS_S0, STORE_STATES, WRITE_Y)."""
        grid = (self.k // self.fwd_bv, batch * self.h)
        warps = 4 if self.k * self.fwd_bv <= 32 * 32 else 8
        return grid, dict(K=self.k, BV=self.fwd_bv, C=CHUNK, PREC=self.prec,
                          LD_MIN=LOG_DECAY_FLOOR, num_warps=warps, num_stages=STAGES, **flags)

    def backward(self, batch: int, **flags):
        """(grid, constexprs) of wkv7_bwd_kernel (flag HAS_DFINAL)."""
        grid = (self.k // self.bwd_bv, batch * self.h)
        warps = 4 if self.k <= 32 else 8
        return grid, dict(K=self.k, BV=self.bwd_bv, BK=self.bwd_bk, C=CHUNK, PREC=self.prec,
                          LD_MIN=LOG_DECAY_FLOOR, num_warps=warps, num_stages=STAGES, **flags)
