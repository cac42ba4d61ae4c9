"""WKV7 on Triton kernels as a torch.autograd.Function: launch shapes, buffers and the backward.

Memory: the forward keeps only its inputs; the backward recomputes the per-chunk entering states
([B, H, T/16, K, K] fp32, transient) with the forward kernel rather than storing them.
"""
from __future__ import annotations

import torch

from ..triton_runtime import check_runnable
from .triton_bwd import wkv7_bwd_kernel
from .triton_fwd import wkv7_fwd_kernel
from .triton_plan import LaunchPlan, Tiles, triton_supports

__all__ = ["wkv7_triton", "WKV7Triton", "triton_supports"]


def launch(kernel, grid, *args, **consts):
    """Runs a kernel; `kernels.compile_check` swaps in a recorder to compile exactly these calls."""
    kernel[grid](*args, **consts)


def _forward_pass(inputs, state0, plan: LaunchPlan, store_states: bool, launch=launch):
    """(y or None, entering states or None, final state): one run of the forward kernel."""
    r = inputs[0]
    bsz, t = r.shape[:2]
    final = torch.empty(bsz, plan.h, plan.k, plan.k, dtype=torch.float32, device=r.device)
    y = final if store_states else torch.empty_like(r)
    states = (torch.empty(bsz, plan.h, plan.n_chunks(t), plan.k, plan.k, dtype=torch.float32,
                          device=r.device) if store_states else final)
    grid, consts = plan.forward(bsz, HAS_S0=state0 is not None, STORE_STATES=store_states,
                                WRITE_Y=not store_states)
    launch(wkv7_fwd_kernel, grid, *inputs, state0 if state0 is not None else final, y, states,
           final, t, plan.h, **consts)
    return (None if store_states else y), (states if store_states else None), final


def wkv7_forward(inputs, state0, plan: LaunchPlan, launch=launch):
    """y [B, T, H, K] in r's dtype and the final state fp32; inputs contiguous, same dtype."""
    y, _, final = _forward_pass(inputs, state0, plan, store_states=False, launch=launch)
    return y, final


def wkv7_backward(inputs, state0, dy, dfinal, plan: LaunchPlan, launch=launch):
    """Gradients (dr, dw, dk, dv, da, db, dstate0) given dy and the final-state gradient (or None)."""
    r, v = inputs[0], inputs[3]
    bsz, t = r.shape[:2]
    dy = torch.zeros_like(r) if dy is None else dy.to(r.dtype).contiguous()
    dfinal = None if dfinal is None else dfinal.float().contiguous()
    _, states, _ = _forward_pass(inputs, state0, plan, store_states=True, launch=launch)
    n_tiles = plan.k // plan.bwd_bv
    parts = torch.empty(5, n_tiles, *r.shape, dtype=torch.float32, device=r.device)
    dv = torch.empty_like(v)
    dstate0 = torch.empty(bsz, plan.h, plan.k, plan.k, dtype=torch.float32, device=r.device)
    grid, consts = plan.backward(bsz, HAS_DFINAL=dfinal is not None)
    launch(wkv7_bwd_kernel, grid, *inputs, dy, states, dfinal if dfinal is not None else dstate0,
           dv, parts, dstate0, t, plan.h, r.numel(), **consts)
    dr, dw, dk, da, db = (p.to(r.dtype) for p in parts.sum(1))
    ds0 = None if state0 is None else dstate0.to(state0.dtype)
    return dr, dw, dk, dv, da, db, ds0


class WKV7Triton(torch.autograd.Function):
    """(y, final_state) = WKV7(r, w, k, v, a, b, state0); gradients for all seven inputs."""

    @staticmethod
    def forward(ctx, r, w, k, v, a, b, state0, plan):
        ctx.set_materialize_grads(False)
        y, final = wkv7_forward((r, w, k, v, a, b), state0, plan)
        ctx.save_for_backward(r, w, k, v, a, b, state0)
        ctx.plan = plan
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        r, w, k, v, a, b, state0 = ctx.saved_tensors
        grads = wkv7_backward((r, w, k, v, a, b), state0, dy, dfinal, ctx.plan)
        return (*grads, None)


def wkv7_triton(r, w, k, v, a, b, state=None, tiles: Tiles | None = None):
    """Triton WKV7 with the `wkv7` contract (chunks of 16); `tiles` overrides the value-tile
    widths (tests shrink them to cover several tiles per head)."""
    reason = triton_supports(r.shape[-1], r.dtype)
    if reason is not None:
        raise ValueError(f"wkv7_triton: unsupported {reason}")
    check_runnable(r, wkv7_fwd_kernel, "wkv7 (triton)")
    inputs = [x.contiguous() for x in (r, w, k, v, a, b)]
    state = None if state is None else state.float().contiguous()
    plan = LaunchPlan.make(r.shape[2], r.shape[3], r.dtype, tiles)
    return WKV7Triton.apply(*inputs, state, plan)
