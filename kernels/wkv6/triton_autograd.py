"""WKV6 on Triton kernels as a torch.autograd.Function: launch shapes, buffers and the backward.

Memory: the forward keeps only its inputs; the backward recomputes the
per-chunk entering states ([B, H, T/C, K, V] fp32, transient) rather than storing them.
"""
from __future__ import annotations

import torch

from ..triton_runtime import check_runnable
from .triton_bwd import (chunk_rk_grads_bwd, chunk_state_grads_bwd, chunk_value_grads_bwd,
                         decay_bonus_grads_bwd)
from .triton_fwd import chunk_outputs_fwd, chunk_states_fwd
from .triton_plan import CHUNK_SIZES, DEFAULT_CHUNK, LaunchPlan, Tiles, triton_supports

__all__ = ["wkv6_triton", "WKV6Triton", "triton_supports"]


def launch(kernel, grid, *args, **consts):
    """Runs a kernel; `kernels.compile_check` swaps in a recorder to compile exactly these calls."""
    kernel[grid](*args, **consts)


def _entering_states(k, v, w, state0, plan: LaunchPlan, launch=launch):
    """States entering each chunk [B, H, N, K, V] and the final state [B, H, K, V], fp32."""
    b, t = k.shape[:2]
    states = torch.empty(b, plan.h, plan.n_chunks(t), plan.k, plan.v, dtype=torch.float32,
                         device=k.device)
    final = torch.empty(b, plan.h, plan.k, plan.v, dtype=torch.float32, device=k.device)
    grid, consts = plan.state_pass(b, HAS_S0=state0 is not None)
    launch(chunk_states_fwd, grid, k, v, w, state0 if state0 is not None else final, states, final,
           t, plan.h, **consts)
    return states, final


def wkv6_forward(r, k, v, w, u, state0, plan: LaunchPlan, launch=launch):
    """y [B, T, H, V] in v's dtype and the final state fp32; inputs contiguous, same dtype."""
    b, t = r.shape[:2]
    states, final = _entering_states(k, v, w, state0, plan, launch)
    y = torch.empty_like(v)
    grid, consts = plan.full_k(b, t, has_u=u is not None)
    launch(chunk_outputs_fwd, grid, r, k, v, w, u if u is not None else r, states, y, t, plan.h,
           **consts)
    return y, final


def wkv6_backward(r, k, v, w, u, state0, dy, dfinal, plan: LaunchPlan, launch=launch):
    """Gradients (dr, dk, dv, dw, du, dstate0) given dy and the final-state gradient (or None)."""
    b, t = r.shape[:2]
    has_u = u is not None
    dy = torch.zeros_like(v) if dy is None else dy.contiguous()
    dfinal = None if dfinal is None else dfinal.float().contiguous()
    states, _ = _entering_states(k, v, w, state0, plan, launch)
    dstates = torch.empty_like(states)
    dstate0 = torch.empty(b, plan.h, plan.k, plan.v, dtype=torch.float32, device=r.device)
    grid, consts = plan.state_pass(b, HAS_DFINAL=dfinal is not None)
    launch(chunk_state_grads_bwd, grid, r, w, dy, dfinal if dfinal is not None else dstate0,
           dstates, dstate0, t, plan.h, **consts)
    dv = torch.empty_like(v)
    grid, consts = plan.full_k(b, t, has_u)
    launch(chunk_value_grads_bwd, grid, r, k, w, dy, u if has_u else r, dstates, dv, t, plan.h,
           **consts)
    dr_part = torch.empty(r.shape, dtype=torch.float32, device=r.device)
    dk_part = torch.empty_like(dr_part)
    carry = torch.empty(b, plan.h, plan.n_chunks(t), plan.k, dtype=torch.float32, device=r.device)
    grid, consts = plan.full_v(b, t)
    launch(chunk_rk_grads_bwd, grid, r, k, v, w, dy, states, dstates, dr_part, dk_part, carry, t,
           plan.h, **consts)
    del states, dstates
    dr, dk, dw = torch.empty_like(r), torch.empty_like(k), torch.empty_like(w)
    du_part = torch.empty_like(carry) if has_u else carry
    grid, consts = plan.decay(b, t, has_u)
    launch(decay_bonus_grads_bwd, grid, r, k, v, w, dy, u if has_u else r, dr_part, dk_part, carry,
           dr, dk, dw, du_part, t, plan.h, **consts)
    du = du_part.sum((0, 2)).to(u.dtype) if has_u else None
    ds0 = None if state0 is None else dstate0.to(state0.dtype)
    return dr, dk, dv, dw, du, ds0


class WKV6Triton(torch.autograd.Function):
    """(y, final_state) = WKV6(r, k, v, w, u, state0); gradients for all six inputs."""

    @staticmethod
    def forward(ctx, r, k, v, w, u, state0, plan):
        ctx.set_materialize_grads(False)
        y, final = wkv6_forward(r, k, v, w, u, state0, plan)
        ctx.save_for_backward(r, k, v, w, u, state0)
        ctx.plan = plan
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        r, k, v, w, u, state0 = ctx.saved_tensors
        grads = wkv6_backward(r, k, v, w, u, state0, dy, dfinal, ctx.plan)
        return (*grads, None)


def wkv6_triton(r, k, v, w, u=None, state=None, chunk_size: int = DEFAULT_CHUNK,
                tiles: Tiles | None = None):
    """Triton WKV6 with the `wkv6` contract; chunk_size (16, 32 or 64) sets the state-pass stride,
    `tiles` overrides the tile widths (tests shrink them to cover several tiles per head)."""
    if chunk_size not in CHUNK_SIZES:
        raise ValueError(f"wkv6_triton: chunk_size must be one of {CHUNK_SIZES}, got {chunk_size}")
    reason = triton_supports(k.shape[-1], v.shape[-1], r.dtype)
    if reason is not None:
        raise ValueError(f"wkv6_triton: unsupported {reason}")
    check_runnable(r, chunk_states_fwd, "wkv6 (triton)")
    r, k, v, w = (x.contiguous() for x in (r, k, v, w))
    u = None if u is None else u.contiguous()
    state = None if state is None else state.contiguous()
    plan = LaunchPlan.make(r.shape[2], r.shape[3], v.shape[3], r.dtype, chunk_size, tiles)
    return WKV6Triton.apply(r, k, v, w, u, state, plan)
