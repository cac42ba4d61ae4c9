"""Choosing the next token from logits: greedy, or temperature + nucleus (top-p) sampling.

Kept apart from the generation loop so the rule can be tested on plain tensors.
"""
from __future__ import annotations

import torch


from common.errors import UserError


def check_params(temperature: float, top_p: float) -> None:
    if not temperature >= 0.0:
        raise UserError(f"--temperature={temperature}: must be >= 0 (0 = greedy)")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"--top-p={top_p}: must be in (0, 1]")


def next_token(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
               generator: torch.Generator | None = None) -> int:
    """One token id from 1-D logits. temperature 0 is argmax (first index on ties). Otherwise
    sample from softmax(logits / T) restricted to the smallest set of most likely tokens whose
    probability reaches top_p; the most likely token is always in the set, so a tiny top_p is
    greedy."""
    check_params(temperature, top_p)
    logits = logits.float().reshape(-1)
    if temperature == 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True, stable=True)
    before = torch.cumsum(sorted_probs, dim=0) - sorted_probs  # mass of the more likely tokens
    keep = before < top_p
    keep[0] = True
    kept = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    choice = torch.multinomial(kept / kept.sum(), 1, generator=generator)
    return int(order[choice])
