"""The loss of a freeze phase: `ce`, `align`, `kl` or a weighted sum such as {kl: 0.5, ce: 0.5}.

`ce` is next-token cross-entropy (with L2Wrap), `kl` KL(teacher || student) at
distill.temperature, `align` the mean over layers of each mixer's distance to its teacher
attention layer (model/align.py). `align` stands alone: in that stage the teacher's attention
outputs feed the student's residual stream, so its logits are not its own.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from common.errors import UserError

from model.align import AttentionSwap

from .kl import chunked_kl
from .teacher import Teacher

LOSSES = ("ce", "align", "kl")
NEED_TEACHER = ("align", "kl")


def parse_loss(spec: Any, where: str) -> dict[str, float]:
    """{loss name: weight} from a phase's `loss`; a ValueError naming `where` if it is not one."""
    if isinstance(spec, str):
        spec = {spec: 1.0}
    if not isinstance(spec, Mapping) or not spec:
        raise UserError(f"{where}={spec!r}: expected one of {', '.join(LOSSES)} or a weighted sum "
                        "such as {kl: 0.5, ce: 0.5}")
    weights = {}
    for name, weight in spec.items():
        if name not in LOSSES:
            raise UserError(f"{where}: unknown loss {name!r}; expected {', '.join(LOSSES)}")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise UserError(f"{where}.{name}={weight!r}: a weight must be a number >= 0")
        weights[name] = float(weight)
    if not any(weights.values()):
        raise UserError(f"{where}: every weight is 0")
    if "align" in weights and len(weights) > 1:
        raise UserError(f"{where}: `align` cannot be summed with {', '.join(set(weights) - {'align'})}: "
                        "in the align stage the teacher's attention outputs feed the student, so its "
                        "logits are not its own; give align a phase of its own")
    return weights


class Objective:
    """`objective(engine, batch)` -> the phase's scalar loss for a [B, ctx+1] window batch, with
    the unweighted parts (`ce`, `kl`, `align`, `align/<layer>`) kept for `take_parts`."""

    def __init__(self, weights: dict[str, float], teacher: Teacher | None, temperature: float = 1.0,
                 kl_chunk: int = 1024, report_parts: bool = False):
        if teacher is None and set(weights) & set(NEED_TEACHER):
            raise UserError(f"loss {weights} needs distill.teacher")
        self.weights, self.teacher = weights, teacher
        self.temperature, self.kl_chunk = temperature, kl_chunk
        self.report_parts = report_parts
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def __call__(self, engine, batch: torch.Tensor) -> torch.Tensor:
        idx, targets = batch[:, :-1], batch[:, 1:]
        self._count += 1
        if self.weights == {"ce": 1.0}:  # plain training: the model's own loss, as always
            loss, _ = engine(idx, targets=targets)
            self._keep("ce", loss)
            return loss
        out = self.teacher(idx, attention="align" in self.weights)
        if "align" in self.weights:
            return self._align(engine, idx, out.attention)
        # gathered only now: the teacher's own forward re-partitions a head tied to its embeddings
        with self.teacher.head_gathered():
            loss, _ = engine(idx, loss_fn=lambda model, h: self._kl_ce(model, h, targets, out.hidden))
        return loss

    def _align(self, engine, idx: torch.Tensor, teacher_att: list[torch.Tensor]) -> torch.Tensor:
        swap = AttentionSwap(teacher_att)
        loss, _ = engine(idx, align=swap, loss_fn=lambda model, h: swap.loss())
        self._keep("align", loss)
        for layer, value in swap.losses.items():
            self._keep(f"align/{layer}", value)
        return loss * self.weights["align"]

    def _kl_ce(self, model, h: torch.Tensor, targets: torch.Tensor, teacher_hidden: torch.Tensor):
        total = h.new_zeros((), dtype=torch.float32)
        if "kl" in self.weights:
            flat = h.reshape(-1, h.shape[-1])
            kl = chunked_kl(flat, model.head.weight, teacher_hidden.reshape(flat.shape[0], -1),
                            self.teacher.head(), self.temperature, self.kl_chunk)
            self._keep("kl", kl)
            total = total + self.weights["kl"] * kl
        if "ce" in self.weights:
            ce = model.lm_loss(h, targets)
            self._keep("ce", ce)
            total = total + self.weights["ce"] * ce
        return total

    def _keep(self, name: str, value: torch.Tensor) -> None:
        if self.report_parts:  # summed on the device: one read per optimizer step, not per part
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value

    def take_parts(self) -> dict[str, float]:
        """The parts' means over the calls since the last take (empty unless report_parts)."""
        parts = {k: float(v) / self._count for k, v in self._sums.items()} if self._count else {}
        self._sums.clear()
        self._count = 0
        return parts
