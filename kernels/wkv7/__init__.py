"""WKV7 (RWKV-7's generalized delta rule): one entry point; naive reference, chunked torch and
Triton backends."""
from __future__ import annotations

import torch

from ..triton_runtime import TritonUnavailable, import_triton, warn_once
from ..wkv6 import BACKENDS, default_backend
from .chunked_torch import wkv7_chunked
from .naive import wkv7_naive
from .triton_plan import triton_supports

NAMES = ("r", "w", "k", "v", "a", "b")


def _check(tensors: dict, state) -> None:
    r = tensors["r"]
    if r.dim() != 4:
        raise ValueError(f"wkv7: r must be [B, T, H, K]; got shape {tuple(r.shape)}")
    bsz, _, h, kk = r.shape
    for name, x in tensors.items():
        if x.shape != r.shape:
            raise ValueError(f"wkv7: {name} has shape {tuple(x.shape)}, expected r's {tuple(r.shape)}")
    if state is not None and state.shape != (bsz, h, kk, kk):
        raise ValueError(f"wkv7: state has shape {tuple(state.shape)}, "
                         f"expected [{bsz}, {h}, {kk}, {kk}]")
    for name, x in {**tensors, "state": state}.items():
        if x is not None and x.device != r.device:
            raise ValueError(f"wkv7: {name} is on {x.device} but r is on {r.device}")
        if x is not None and not x.is_floating_point():
            raise ValueError(f"wkv7: {name} must be a floating-point tensor, got {x.dtype}")
        if x is not None and name != "state" and x.dtype != r.dtype:
            raise ValueError(f"wkv7: {name} has dtype {x.dtype} but r has {r.dtype}; "
                             "r, w, k, v, a and b must share one dtype (state may differ)")


def _pick(backend: str | None, device: torch.device) -> str:
    """naive | torch | triton: an explicit backend wins, else the shared WKV default; auto runs
    Triton on CUDA tensors and torch elsewhere."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"wkv7: unknown backend {backend!r} (backend=); expected one of "
                         f"{', '.join(BACKENDS)}")
    choice = default_backend() if backend is None else backend
    if choice == "auto":
        return "triton" if device.type == "cuda" else "torch"
    return choice


def _run_triton(args, state, explicit: bool):
    """Triton when it can take these inputs; otherwise torch, after saying why once."""
    r = args[0]
    reason = triton_supports(r.shape[-1], r.dtype)
    if reason is None and r.shape[1] == 0:
        reason = "empty sequence (T=0)"
    if reason is not None:
        warn_once(f"wkv7: the Triton backend does not take {reason}; using the torch backend")
        return wkv7_chunked(*args, state)
    try:
        import_triton()
        from .triton_autograd import wkv7_triton
        return wkv7_triton(*args, state)
    except TritonUnavailable as err:  # raised before any work: nothing half-done is hidden
        if explicit:
            raise
        warn_once(f"wkv7: {err}; using the torch backend")
        return wkv7_chunked(*args, state)


def wkv7(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
         b: torch.Tensor, state: torch.Tensor | None = None, backend: str | None = None):
    """y, final_state = wkv7(r, w, k, v, a, b, state): the RWKV-7 recurrence per head,

        S_t = diag(exp(-exp(w_t))) S_{t-1} + b_t^T (a_t S_{t-1}) + k_t^T v_t,   y_t = r_t S_t

    (row vectors over K, S [K, V] with V = K; y reads the state after the update; scale 1).
    r, w, k, v, a, b [B, T, H, K]; state [B, H, K, K] fp32 or None (zeros). Returns y in r's dtype
    and the final state in fp32. `backend`: auto (Triton for CUDA tensors, torch otherwise) |
    torch | naive | triton (CUDA, or CPU under TRITON_INTERPRET=1); None takes the shared WKV
    default (`kernels.set_wkv_backend` or, for a block, `kernels.wkv_backend_default`; then
    GOLDFINCH_WKV_BACKEND; then auto). Head sizes or dtypes the Triton kernels lack fall back to
    torch with a one-time warning. The Triton path floors each step's log-decay -exp(w) at -4
    (w <= log 4; RWKV-7's w stays below -0.5).
    """
    tensors = dict(zip(NAMES, (r, w, k, v, a, b)))
    _check(tensors, state)
    choice = _pick(backend, r.device)
    if choice == "naive":
        return wkv7_naive(r, w, k, v, a, b, state)
    if choice == "triton":
        return _run_triton((r, w, k, v, a, b), state, explicit=choice == "triton")
    return wkv7_chunked(r, w, k, v, a, b, state)


__all__ = ["wkv7", "wkv7_chunked", "wkv7_naive"]
