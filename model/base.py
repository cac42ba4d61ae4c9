"""What every architecture shares: embeddings, head, input checks and state bookkeeping."""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .state import BlockState, ModelState

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class LanguageModel(nn.Module):
    """`logits, state = model(idx, state=None, last_only=False)` for idx [B, T] token ids."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is unset: take it from the data's tokenizer or set it")
        self.cfg = cfg
        self.cache_dtype = DTYPES[cfg.cache_dtype]
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.blocks = nn.ModuleList()
        self.grad_ckpt = False  # recompute each block in the backward pass (train.grad_ckpt)

    def check_input(self, idx: torch.Tensor, state: ModelState | None) -> ModelState:
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be an integer tensor [B, T]; got {tuple(idx.shape)} {idx.dtype}")
        if idx.shape[1] == 0:
            raise ValueError("idx holds no tokens (T = 0)")
        if idx.device.type != "meta" and idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.cfg.vocab_size:
                bad = hi if hi >= self.cfg.vocab_size else lo
                raise ValueError(f"token id {bad} is outside the vocabulary "
                                 f"[0, {self.cfg.vocab_size}) (model.vocab_size)")
        if state is None:
            return self.new_state(idx.shape[0])
        state.check(self.cfg.arch, idx.shape[0], len(self.blocks))
        return state

    def new_state(self, batch_size: int) -> ModelState:
        return ModelState(self.cfg.arch, batch_size, [BlockState() for _ in self.blocks])

    def run_block(self, block: nn.Module, *args, **kwargs):
        """Call a block, through activation checkpointing when training with grad_ckpt on."""
        if self.grad_ckpt and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    def logits(self, x: torch.Tensor, last_only: bool, return_hidden: bool = False) -> torch.Tensor:
        """Head output; with return_hidden, the normed features the head would multiply instead
        (for a fused linear + cross-entropy that never materialises the logits)."""
        h = self.ln_out(x[:, -1:] if last_only else x)
        return h if return_hidden else self.head(h)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.emb.weight.numel() if exclude_embeddings else n
