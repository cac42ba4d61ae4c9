"""WKV7 (RWKV-7's generalized delta rule): one entry point; naive reference and chunked torch."""
from __future__ import annotations

import torch

from ..triton_runtime import warn_once
from ..wkv6 import BACKENDS, default_backend
from .chunked_torch import wkv7_chunked
from .naive import wkv7_naive

NAMES = ("r", "w", "k", "v", "a", "b")


class TritonNotBuilt(NotImplementedError):
    """backend="triton" for WKV7: the kernels do not exist yet."""


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


def _pick(backend: str | None) -> str:
    """naive | torch. An explicit backend="triton" is an error; a configured default of triton
    (meant for wkv6) runs torch, said once."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"wkv7: unknown backend {backend!r} (backend=); expected one of "
                         f"{', '.join(BACKENDS)}")
    if backend == "triton":
        raise TritonNotBuilt("wkv7: the Triton backend is not built yet; "
                             "use backend='torch' (chunked) or 'naive'")
    choice = default_backend() if backend is None else backend
    if choice == "triton":
        warn_once("wkv7: the default WKV backend is triton, which wkv7 does not have yet; "
                  "using the torch backend")
    return "naive" if choice == "naive" else "torch"


def wkv7(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
         b: torch.Tensor, state: torch.Tensor | None = None, backend: str | None = None):
    """y, final_state = wkv7(r, w, k, v, a, b, state): the RWKV-7 recurrence per head,

        S_t = diag(exp(-exp(w_t))) S_{t-1} + b_t^T (a_t S_{t-1}) + k_t^T v_t,   y_t = r_t S_t

    (row vectors over K, S [K, V] with V = K; y reads the state after the update; scale 1).
    r, w, k, v, a, b [B, T, H, K]; state [B, H, K, K] fp32 or None (zeros). Returns y in r's dtype
    and the final state in fp32. `backend`: auto | torch | naive; None takes the shared WKV
    default (`kernels.set_wkv_backend`, then GOLDFINCH_WKV_BACKEND, then auto). auto runs torch
    everywhere until a Triton WKV7 exists; backend="triton" raises `TritonNotBuilt`.
    """
    tensors = dict(zip(NAMES, (r, w, k, v, a, b)))
    _check(tensors, state)
    if _pick(backend) == "naive":
        return wkv7_naive(r, w, k, v, a, b, state)
    return wkv7_chunked(r, w, k, v, a, b, state)


__all__ = ["wkv7", "wkv7_chunked", "wkv7_naive", "TritonNotBuilt"]
