"""Pick rows of a batched inference state, so one pre-filled context serves several continuations.

Every tensor a ModelState holds is batch-first, and the model never writes into a state it is
given (each forward returns a new one), so indexing rows is all that reuse needs.
"""
from __future__ import annotations

from dataclasses import fields, replace

import torch

from model import ModelState
from model.state import BlockState


def select_rows(state: ModelState, rows: torch.Tensor) -> ModelState:
    """A state for len(rows) sequences; row i continues sequence rows[i] of `state`."""
    def pick(t):
        return None if t is None else t.index_select(0, rows.to(t.device))
    blocks = [BlockState(**{f.name: pick(getattr(b, f.name)) for f in fields(b)}) for b in state.blocks]
    return replace(state, batch_size=len(rows), blocks=blocks, compressed=pick(state.compressed),
                   tokens=pick(state.tokens))
