"""The paper's Llama baseline: LN0 on the embeddings, LayerNorm pre-norm blocks, RoPE, multi-head
softmax attention (no GQA), SwiGLU."""
from __future__ import annotations

import torch

from .base import LanguageModel
from .blocks import LlamaBlock
from .config import ModelConfig
from .state import ModelState


class Llama(LanguageModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.blocks.extend(LlamaBlock(cfg) for _ in range(cfg.n_layer))

    def forward(self, idx: torch.Tensor, state: ModelState | None = None, last_only: bool = False,
                return_hidden: bool = False, targets: torch.Tensor | None = None):
        state = self.check_input(idx, state)
        x = self.ln0(self.emb(idx.long()))
        new_blocks = []
        for block, st in zip(self.blocks, state.blocks):
            x, st = self.run_block(block, x, st, state.seen, self.stored_dtype(x))
            new_blocks.append(st)
        new_state = ModelState(self.cfg.arch, state.batch_size, new_blocks, state.seen + idx.shape[1])
        return self.output(x, last_only, return_hidden, targets), new_state
