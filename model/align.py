"""Distillation's align stage: every time mixer learns its teacher attention layer's output.

The teacher's attention output, not the student's, feeds the residual stream (ARWKV's
AttentionWrapper), so each mixer sees the input its teacher layer saw while the norms, MLPs and
head copied from the teacher stay frozen. The loss per layer is the mean over tokens of
||h_teacher - h_student||_2 / sqrt(n_embd); the stage's loss is the mean over layers.
"""
from __future__ import annotations

import torch


from common.errors import UserError


class AttentionSwap:
    """Handed to the model's forward (`align=`): swaps each block's time-mix output for the
    teacher's and keeps that layer's align loss."""

    def __init__(self, teacher_outputs: list[torch.Tensor]):
        self.teacher_outputs = teacher_outputs
        self.losses: dict[int, torch.Tensor] = {}  # by layer: recomputation overwrites, never adds

    def swap(self, layer: int, student: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher_outputs[layer]
        if teacher.shape != student.shape:
            raise UserError(f"align: the teacher's attention output of layer {layer} has shape "
                            f"{tuple(teacher.shape)}, the student's time mix {tuple(student.shape)}")
        diff = teacher.float() - student.float()
        self.losses[layer] = torch.linalg.vector_norm(diff, dim=-1).mean() * diff.shape[-1] ** -0.5
        return teacher.to(student.dtype)

    def loss(self) -> torch.Tensor:
        """The mean over layers of the layers' align losses."""
        if len(self.losses) != len(self.teacher_outputs):
            raise RuntimeError(f"align: {len(self.losses)} of {len(self.teacher_outputs)} layers "
                               "produced an align loss")
        return torch.stack([self.losses[i] for i in sorted(self.losses)]).mean()
