"""Fused linear + cross-entropy: the LM head and its loss without materialising [N, V] logits.

Row backends: Triton on CUDA tensors (and on CPU under TRITON_INTERPRET=1), plain torch on CPU
otherwise. Reference: F.cross_entropy(hidden @ weight.T, targets, ignore_index=...).
"""
from __future__ import annotations

import torch

from ..triton_runtime import (TritonUnavailable, check_runnable, import_triton, interpreting,
                              warn_once)
from .autograd import LinearCrossEntropy, default_chunk_rows
from .chunked_torch import ce_rows_torch
from .l2wrap import L2Wrap, cross_entropy_l2wrap

CE_BACKENDS = ("auto", "torch", "triton")


def _check(hidden, weight, targets) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"fused_linear_cross_entropy: hidden has shape {tuple(hidden.shape)} and "
                         f"weight {tuple(weight.shape)}; expected [N, D] and [V, D]")
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"fused_linear_cross_entropy: targets has shape {tuple(targets.shape)}, "
                         f"expected [{hidden.shape[0]}]")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"fused_linear_cross_entropy: targets must be integer, got {targets.dtype}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"fused_linear_cross_entropy: weight has dtype {weight.dtype} but hidden "
                         f"has {hidden.dtype}")
    for name, x in (("weight", weight), ("targets", targets)):
        if x.device != hidden.device:
            raise ValueError(f"fused_linear_cross_entropy: {name} is on {x.device} but hidden is "
                             f"on {hidden.device}")


def _rows_fn(device: torch.device, backend: str):
    """The per-row CE function for this device and requested backend."""
    if backend == "torch" or (backend == "auto" and device.type == "cpu" and not interpreting()):
        return ce_rows_torch
    try:
        import_triton()
        from .triton_ce import ce_rows_kernel, ce_rows_triton
        probe = torch.empty(0, device=device)
        check_runnable(probe, ce_rows_kernel, "fused_linear_cross_entropy (triton)")
    except TritonUnavailable as err:
        if backend == "triton":
            raise
        warn_once(f"fused_linear_cross_entropy: {err}; using the torch row function")
        return ce_rows_torch
    return ce_rows_triton


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               ignore_index: int = -100, chunk_size: int | None = None,
                               backend: str = "auto", l2wrap: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of hidden [N, D] @ weight[V, D]^T against targets [N], in chunks of
    `chunk_size` rows (default: about 64 M logits per chunk). Accumulates in fp32; fp32, bf16 or
    fp16 inputs. Like F.cross_entropy, the mean is over non-ignored targets (NaN if there are none).
    `l2wrap` > 0 adds the reference's L2Wrap gradient (see kernels.fused_ce.l2wrap) over all N rows.
    """
    if backend not in CE_BACKENDS:
        raise ValueError(f"fused_linear_cross_entropy: unknown backend {backend!r}; "
                         f"expected one of {', '.join(CE_BACKENDS)}")
    _check(hidden, weight, targets)
    vocab = weight.shape[0]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        raise ValueError(f"fused_linear_cross_entropy: targets outside [0, {vocab}) that are not "
                         f"ignore_index={ignore_index}")
    chunk = chunk_size or default_chunk_rows(hidden.shape[0], vocab)
    if chunk < 1:
        raise ValueError(f"fused_linear_cross_entropy: chunk_size must be >= 1, got {chunk_size}")
    if not l2wrap >= 0:
        raise ValueError(f"fused_linear_cross_entropy: l2wrap must be >= 0, got {l2wrap}")
    grad_on = torch.is_grad_enabled()
    return LinearCrossEntropy.apply(
        hidden.contiguous(), weight.contiguous(), targets.long().contiguous(), ignore_index, chunk,
        _rows_fn(hidden.device, backend), grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad, float(l2wrap))


__all__ = ["fused_linear_cross_entropy", "cross_entropy_l2wrap", "L2Wrap", "CE_BACKENDS"]
