"""Launch plan of the WKV6 Triton kernels: grids, tile sizes, warps and dot precision.

Kept apart from the launches so that `kernels.compile_check` compiles exactly what runs.
Tiles: the state passes hold a [BK, BV] block of the state; the chunk kernels that need a full
key row (outputs, dv) hold [K, BV], the one that needs a full value row (dr, dk) holds [BK, V],
and the decay kernel a [C, BK] block. `Tiles` overrides the defaults: tests shrink them so that
the interpreter runs the several-tiles-per-head paths a GPU runs at K=128.

Dots: fp32 inputs get exact fp32 products ("ieee"); bf16 and fp16 inputs feed bf16 operands to
the tensor cores with fp32 accumulation (half the registers of tf32 operands, and bf16 has
fp32's range). Tile sizes and warps were chosen with `python -m kernels.compile_check` so that no
half-precision variant spills at K = 64 or 128 (docs/BENCHMARKS.md has the counts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

HEAD_SIZES = (16, 32, 64, 128)
CHUNK_SIZES = (16, 32, 64)
SUB_CHUNK = 16
DEFAULT_CHUNK = 64
INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_supports(k_size: int, v_size: int, dtype: torch.dtype) -> str | None:
    """None if the Triton kernels handle this head shape and dtype, else the reason they do not."""
    if k_size not in HEAD_SIZES or v_size not in HEAD_SIZES:
        return f"head size K={k_size}, V={v_size} (Triton WKV6 supports {HEAD_SIZES})"
    if dtype not in INPUT_DTYPES:
        return f"dtype {dtype} (Triton WKV6 takes fp32, bf16 or fp16)"
    return None


@dataclass(frozen=True)
class Tiles:
    """Tile widths (powers of two >= 16, at most the head size); None keeps the default."""
    state_bk: int | None = None
    state_bv: int | None = None
    full_k_bv: int | None = None
    full_v_bk: int | None = None
    decay_bk: int | None = None

    def check(self, k: int, v: int) -> None:
        for name in ("state_bk", "state_bv", "full_k_bv", "full_v_bk", "decay_bk"):
            size = getattr(self, name)
            limit = v if name in ("state_bv", "full_k_bv") else k
            if size is not None and (size < 16 or size & (size - 1) or size > limit):
                raise ValueError(f"Tiles.{name}={size}: must be a power of two in [16, {limit}]")


def _warps(elements: int) -> int:
    """Warps for a program whose largest fp32 tile holds this many elements."""
    return 4 if elements <= 64 * 32 else 8


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs besides the tensors, for one (H, K, V, dtype, chunk)."""
    h: int
    k: int
    v: int
    chunk: int
    exact_dots: bool
    tiles: Tiles = field(default_factory=Tiles)

    @classmethod
    def make(cls, h: int, k: int, v: int, dtype: torch.dtype, chunk: int = DEFAULT_CHUNK,
             tiles: Tiles | None = None):
        tiles = tiles or Tiles()
        tiles.check(k, v)
        return cls(h, k, v, chunk, exact_dots=dtype == torch.float32, tiles=tiles)

    @property
    def prec(self) -> str:
        return "ieee" if self.exact_dots else "bf16"

    @property
    def state_bk(self) -> int:
        return self.tiles.state_bk or min(self.k, 32 if self.exact_dots else 64)

    @property
    def state_bv(self) -> int:
        return self.tiles.state_bv or min(self.v, 64)

    @property
    def full_k_bv(self) -> int:
        return self.tiles.full_k_bv or min(self.v, 64 if self.k <= 64 else 32)

    @property
    def full_v_bk(self) -> int:
        return self.tiles.full_v_bk or min(self.k, 64 if self.v <= 64 else 32)

    @property
    def decay_bk(self) -> int:
        return self.tiles.decay_bk or min(self.k, 32)

    def n_chunks(self, t: int) -> int:
        return -(-t // self.chunk)

    def _base(self) -> dict:
        return dict(K=self.k, V=self.v, C=self.chunk)

    def _state_warps(self) -> int:
        if self.exact_dots:
            return _warps(self.chunk * max(self.state_bk, self.state_bv))
        # 2, 4, 8 warps for 16x16, 32x32, 64x64 blocks: the others leave ptxas a stack frame
        return max(2, min(8, self.state_bk * self.state_bv // 256))

    def state_pass(self, batch: int, **flags):
        """(grid, constexprs) of chunk_states_fwd (flag HAS_S0) / chunk_state_grads_bwd
        (flag HAS_DFINAL)."""
        grid = (self.k // self.state_bk, self.v // self.state_bv, batch * self.h)
        return grid, dict(self._base(), BK=self.state_bk, BV=self.state_bv, PREC=self.prec,
                          num_warps=self._state_warps(), **flags)

    def full_k(self, batch: int, t: int, has_u: bool):
        """(grid, constexprs) of chunk_outputs_fwd and chunk_value_grads_bwd."""
        grid = (self.v // self.full_k_bv, self.n_chunks(t), batch * self.h)
        return grid, dict(self._base(), BC=SUB_CHUNK, BV=self.full_k_bv, HAS_U=has_u,
                          PREC=self.prec, num_warps=_warps(self.k * self.full_k_bv))

    def full_v(self, batch: int, t: int):
        """(grid, constexprs) of chunk_rk_grads_bwd. Its dr and dk cancel each other in dw
        (sum r dr - k dk), so it keeps fp32 operands (tf32 for half inputs): with bf16 ones the
        max error of dw grows from ~0.5% to ~5% of its largest value."""
        grid = (self.k // self.full_v_bk, self.n_chunks(t), batch * self.h)
        return grid, dict(self._base(), BC=SUB_CHUNK, BK=self.full_v_bk,
                          PREC="ieee" if self.exact_dots else "tf32",
                          num_warps=self._full_v_warps())

    def _full_v_warps(self) -> int:
        if not self.exact_dots and self.full_v_bk * self.v >= 32 * 32:
            return 8  # 4 warps spill at K = 32 for one-token (T = 1) launches
        return _warps(self.full_v_bk * self.v)

    def decay(self, batch: int, t: int, has_u: bool):
        """(grid, constexprs) of decay_bonus_grads_bwd."""
        grid = (self.k // self.decay_bk, self.n_chunks(t), batch * self.h)
        return grid, dict(self._base(), BK=self.decay_bk, BV=min(self.v, 32), HAS_U=has_u,
                          num_warps=_warps(self.chunk * self.decay_bk))
