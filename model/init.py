"""Initialisation as the authors' code does it, for every architecture.

The model-level tensors here: embeddings uniform ±1e-4, the head orthogonal with gain
0.5·sqrt(vocab/n_embd) (0.5 when vocab ≤ n_embd), the key compression orthogonal, norms ones and
zeros. Each block's parts initialise themselves (`reset_parameters`), as their authors do.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .init_schedules import orthogonal


@torch.no_grad()
def init_weights(model) -> None:
    cfg = model.cfg
    nn.init.uniform_(model.emb.weight, -1e-4, 1e-4)
    head_gain = 0.5 * math.sqrt(cfg.vocab_size / cfg.n_embd) if cfg.vocab_size > cfg.n_embd else 0.5
    orthogonal(model.head.weight, head_gain)
    for i, block in enumerate(model.blocks):
        block.reset_parameters(i, cfg.n_layer)
    if model.kv_compression is not None:
        orthogonal(model.kv_compression.compress.weight)
        orthogonal(model.kv_compression.expand.weight)
