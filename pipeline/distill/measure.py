"""How close a student is to its teacher on the val windows: KL(teacher || student) per token
and both models' next-token loss, on exactly the windows `pipeline.evaluate` scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.val_windows import ValWindows, summed_loss
from .kl import chunked_kl
from .teacher import Teacher


def _teacher_ce(hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, vocab: int,
                chunk: int) -> torch.Tensor:
    """The teacher's mean next-token loss over its logits restricted to the student's vocabulary,
    chunked over tokens."""
    flat, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=hidden.device)
    for i in range(0, flat.shape[0], chunk):
        logits = (flat[i:i + chunk] @ head[:vocab].t()).float()
        total += F.cross_entropy(logits, flat_targets[i:i + chunk], reduction="sum").double()
    return total / flat.shape[0]


@torch.no_grad()
def compare_with_teacher(model, teacher: Teacher, val: ValWindows, micro_batch: int,
                         temperature: float = 1.0, chunk: int = 1024) -> dict:
    """{"kl_teacher_student", "teacher_loss"}: means over every target token of the windows."""
    model.eval()
    vocab = model.cfg.vocab_size

    def kl(batch: torch.Tensor) -> torch.Tensor:
        h, _ = model(batch[:, :-1], return_hidden=True)
        flat = h.reshape(-1, h.shape[-1])
        t = teacher(batch[:, :-1]).hidden
        return chunked_kl(flat, model.head.weight, t.reshape(flat.shape[0], -1).to(flat.dtype),
                          teacher.head().to(flat.dtype), temperature, chunk)

    def teacher_loss(batch: torch.Tensor) -> torch.Tensor:
        return _teacher_ce(teacher(batch[:, :-1]).hidden, teacher.head(), batch[:, 1:], vocab, chunk)

    device = model.head.weight.device
    kl_sums = summed_loss(kl, val, micro_batch, device)
    teacher_sums = summed_loss(teacher_loss, val, micro_batch, device)
    return {"kl_teacher_student": (kl_sums[0] / kl_sums[1]).item(),
            "teacher_loss": (teacher_sums[0] / teacher_sums[1]).item()}
