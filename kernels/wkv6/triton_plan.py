"""Launch plan of the WKV6 Triton kernels: grids, tile sizes, warps and dot precision.

Kept apart from the launches so that `kernels.compile_check` compiles exactly what runs.
Tiles: the state passes hold a [BK, BV] block of the state; the chunk kernels that need a full
key row (outputs, dv) hold [K, BV], the one that needs a full value row (dr, dk) holds [BK, V].
fp32 inputs use exact ("ieee") fp32 dots, which stage more in shared memory than tf32 ones, so
their state blocks are halved to stay under ~100 KB per program (consumer GPUs allow 99 KB).
"""
from __future__ import annotations

from dataclasses import dataclass

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


def _warps(rows: int, cols: int) -> int:
    return 4 if rows * cols <= 64 * 64 else 8


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs besides the tensors, for one (H, K, V, dtype, chunk)."""
    h: int
    k: int
    v: int
    chunk: int
    exact_dots: bool

    @classmethod
    def make(cls, h: int, k: int, v: int, dtype: torch.dtype, chunk: int = DEFAULT_CHUNK):
        return cls(h, k, v, chunk, exact_dots=dtype == torch.float32)

    @property
    def prec(self) -> str:
        """fp32 inputs get exact fp32 products; half-precision inputs can afford tf32 cores."""
        return "ieee" if self.exact_dots else "tf32"

    @property
    def state_bk(self) -> int:
        return min(self.k, 32 if self.exact_dots else 64)

    @property
    def state_bv(self) -> int:
        return min(self.v, 64)

    @property
    def full_k_bv(self) -> int:
        return min(self.v, 64 if self.k <= 64 else 32)

    @property
    def full_v_bk(self) -> int:
        return min(self.k, 64 if self.v <= 64 else 32)

    def n_chunks(self, t: int) -> int:
        return -(-t // self.chunk)

    def _base(self) -> dict:
        return dict(H=self.h, K=self.k, V=self.v, C=self.chunk)

    def state_pass(self, batch: int, **flags):
        """(grid, constexprs) of chunk_states_fwd (flag HAS_S0) / chunk_state_grads_bwd
        (flag HAS_DFINAL)."""
        grid = (self.k // self.state_bk, self.v // self.state_bv, batch * self.h)
        return grid, dict(self._base(), BK=self.state_bk, BV=self.state_bv, PREC=self.prec,
                          num_warps=_warps(self.state_bk, self.state_bv), **flags)

    def full_k(self, batch: int, t: int, has_u: bool):
        """(grid, constexprs) of chunk_outputs_fwd and chunk_value_grads_bwd."""
        grid = (self.v // self.full_k_bv, self.n_chunks(t), batch * self.h)
        return grid, dict(self._base(), BC=SUB_CHUNK, BV=self.full_k_bv, HAS_U=has_u,
                          PREC=self.prec, num_warps=_warps(self.k, self.full_k_bv))

    def full_v(self, batch: int, t: int):
        """(grid, constexprs) of chunk_rk_grads_bwd."""
        grid = (self.k // self.full_v_bk, self.n_chunks(t), batch * self.h)
        return grid, dict(self._base(), BC=SUB_CHUNK, BK=self.full_v_bk, PREC=self.prec,
                          num_warps=_warps(self.full_v_bk, self.v))

    def decay(self, batch: int, t: int, has_u: bool):
        """(grid, constexprs) of decay_bonus_grads_bwd."""
        bk = min(self.k, 64)
        grid = (self.k // bk, self.n_chunks(t), batch * self.h)
        return grid, dict(self._base(), BK=bk, HAS_U=has_u, num_warps=4)
