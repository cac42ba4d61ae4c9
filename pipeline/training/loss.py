"""The training loss: next-token cross-entropy with the reference's L2Wrap logit penalty.

`lm_loss` is the plain form over materialised logits; the model computes the same loss inside its
forward (so ZeRO-3 has the head gathered) through the kernels it shares with this function, and
`set_l2wrap` is how the trainer hands it `train.l2wrap`.
"""
from __future__ import annotations

import torch

from kernels import cross_entropy_l2wrap

L2WRAP_ATTR = "l2wrap"  # the model attribute its loss reads the penalty factor from


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, l2wrap: float = 0.0,
            ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of logits [..., V] against targets [...]; its gradient is the
    cross-entropy's plus L2Wrap's: each position's largest logit gets l2wrap/(positions)·itself."""
    return cross_entropy_l2wrap(logits, targets, l2wrap, ignore_index)


def set_l2wrap(model: torch.nn.Module, l2wrap: float) -> None:
    """Tell the model's in-forward loss (plain or fused) the L2Wrap factor for training."""
    setattr(model, L2WRAP_ATTR, float(l2wrap))
