"""WKV6: one entry point, several backends (naive reference, chunked torch, Triton)."""
from __future__ import annotations

import contextlib
import os

import torch

from ..triton_runtime import TritonUnavailable, import_triton, warn_once
from .chunked_torch import wkv6_chunked
from .naive import wkv6_naive
from .triton_plan import triton_supports

BACKEND_ENV = "GOLDFINCH_WKV_BACKEND"
BACKENDS = ("auto", "torch", "naive", "triton")
_default_backend: str | None = None


def _valid(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"wkv6: unknown backend {name!r} ({where}); expected one of "
                         f"{', '.join(BACKENDS)}")
    return name


def set_default_backend(name: str | None) -> None:
    """The backend `wkv6` uses when a call names none (the trainer sets it from its config);
    None goes back to GOLDFINCH_WKV_BACKEND, else auto."""
    global _default_backend
    _default_backend = None if name is None else _valid(name, "set_default_backend")


@contextlib.contextmanager
def backend_default(name: str | None):
    """`set_default_backend(name)` for one block (a training run), then the previous default:
    a run's choice does not outlive it in a process that goes on."""
    global _default_backend
    saved = _default_backend
    set_default_backend(name)
    try:
        yield
    finally:
        _default_backend = saved


def default_backend() -> str:
    """What a call without `backend=` runs: the configured default, else the environment's, else
    auto. The environment variable is only a default: an explicit argument always wins."""
    if _default_backend is not None:
        return _default_backend
    env = os.environ.get(BACKEND_ENV)
    return _valid(env, f"from {BACKEND_ENV}") if env else "auto"


def _check(r, k, v, w, u, state) -> None:
    if r.dim() != 4:
        raise ValueError(f"wkv6: r must be [B, T, H, K]; got shape {tuple(r.shape)}")
    b, t, h, kk = r.shape
    for name, x in (("k", k), ("w", w)):
        if x.shape != r.shape:
            raise ValueError(f"wkv6: {name} has shape {tuple(x.shape)}, expected r's {tuple(r.shape)}")
    if v.dim() != 4 or v.shape[:3] != (b, t, h):
        raise ValueError(f"wkv6: v has shape {tuple(v.shape)}, expected [{b}, {t}, {h}, V]")
    if u is not None and u.shape != (h, kk):
        raise ValueError(f"wkv6: u has shape {tuple(u.shape)}, expected [{h}, {kk}]")
    if state is not None and state.shape != (b, h, kk, v.shape[-1]):
        raise ValueError(f"wkv6: state has shape {tuple(state.shape)}, "
                         f"expected [{b}, {h}, {kk}, {v.shape[-1]}]")
    tensors = {"r": r, "k": k, "v": v, "w": w, "u": u, "state": state}
    for name, x in tensors.items():
        if x is not None and x.device != r.device:
            raise ValueError(f"wkv6: {name} is on {x.device} but r is on {r.device}")
        if x is not None and not x.is_floating_point():
            raise ValueError(f"wkv6: {name} must be a floating-point tensor, got {x.dtype}")
    for name in ("k", "v", "w"):
        if tensors[name].dtype != r.dtype:
            raise ValueError(f"wkv6: {name} has dtype {tensors[name].dtype} but r has {r.dtype}; "
                             "r, k, v and w must share one dtype (u and state may differ)")


def _run_triton(r, k, v, w, u, state, explicit: bool):
    """Triton when it can take these inputs; otherwise torch, after saying why once."""
    reason = triton_supports(r.shape[-1], v.shape[-1], r.dtype)
    if reason is None and r.shape[1] == 0:
        reason = "empty sequence (T=0)"
    if reason is not None:
        warn_once(f"wkv6: the Triton backend does not take {reason}; using the torch backend")
        return wkv6_chunked(r, k, v, w, u, state)
    try:
        import_triton()
        from .triton_autograd import wkv6_triton
        return wkv6_triton(r, k, v, w, u, state)
    except TritonUnavailable as err:  # raised before any work: nothing half-done is hidden
        if explicit:
            raise
        warn_once(f"wkv6: {err}; using the torch backend")
        return wkv6_chunked(r, k, v, w, u, state)


def wkv6(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
         u: torch.Tensor | None = None, state: torch.Tensor | None = None,
         backend: str | None = None):
    """y, final_state = wkv6(r, k, v, w, u, state): the RWKV-6 recurrence per head,

        S_t = diag(exp(-exp(w_t))) S_{t-1} + k_t^T v_t,   y_t = r_t (S_{t-1} + diag(u) k_t^T v_t).

    r, k, w [B, T, H, K]; v [B, T, H, V]; u [H, K] or None (no bonus); state [B, H, K, V] fp32.
    `backend`: auto (Triton for CUDA tensors, torch otherwise) | torch | naive | triton (CUDA, or
    CPU under TRITON_INTERPRET=1); None takes `default_backend()` (config, then the environment
    variable GOLDFINCH_WKV_BACKEND, then auto).
    Head sizes or dtypes the Triton kernels lack fall back to torch with a one-time warning.
    """
    _check(r, k, v, w, u, state)
    choice = default_backend() if backend is None else _valid(backend, "backend=")
    if choice == "naive":
        return wkv6_naive(r, k, v, w, u, state)
    if choice == "triton" or (choice == "auto" and r.device.type == "cuda"):
        return _run_triton(r, k, v, w, u, state, explicit=choice == "triton")
    return wkv6_chunked(r, k, v, w, u, state)


__all__ = ["wkv6", "wkv6_chunked", "wkv6_naive", "BACKENDS", "BACKEND_ENV", "default_backend",
           "set_default_backend", "backend_default"]
