"""The reference's L2Wrap logit penalty on materialised logits (the plain, unfused loss path).

The loss value is untouched; in the backward each position's largest logit gets
l2wrap / (number of positions) times its own value added to its gradient, which pulls the top
logit towards 0 and keeps logits from drifting up in bf16. The penalty is scaled by the incoming
gradient, as RWKV-LM's corrected L2Wrap does: at an incoming gradient of 1 (the reference's single
GPU, no accumulation) it is the GoldFinch reference's exactly, and under gradient accumulation
(which scales each micro-batch's loss) or several ranks the penalty per position stays the same,
so 1 rank × 4 accumulation steps and 2 ranks × 2 train alike. The reference's unscaled form made
the penalty grow with the accumulation steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class L2Wrap(torch.autograd.Function):
    """loss -> loss; the backward also returns the penalty's gradient for `logits` [..., V]."""

    @staticmethod
    def forward(ctx, loss, logits, l2wrap: float):
        top, where = logits.detach().max(dim=-1, keepdim=True)
        positions = logits.numel() // max(logits.shape[-1], 1)
        ctx.save_for_backward(top, where)
        ctx.shape, ctx.dtype, ctx.factor = logits.shape, logits.dtype, l2wrap / max(positions, 1)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        top, where = ctx.saved_tensors
        grad = torch.zeros(ctx.shape, dtype=ctx.dtype, device=top.device)
        grad.scatter_(-1, where, top * (ctx.factor * grad_loss.to(top.dtype)))
        return grad_loss, grad, None


def cross_entropy_l2wrap(logits: torch.Tensor, targets: torch.Tensor, l2wrap: float = 0.0,
                         ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of logits [..., V] (in fp32) against targets [...], with the L2Wrap
    gradient when l2wrap > 0 (over every position, ignored targets included, as the reference)."""
    if not l2wrap >= 0:
        raise ValueError(f"cross_entropy_l2wrap: l2wrap must be >= 0, got {l2wrap}")
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index)
    if l2wrap > 0 and logits.requires_grad and torch.is_grad_enabled():
        loss = L2Wrap.apply(loss, logits, l2wrap)
    return loss
