"""What every architecture shares: embeddings, head, input checks and state bookkeeping."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError

from .config import ModelConfig
from .parts import NORMS
from .state import BlockState, ModelState

# a loss over the model's final normed features: fn(model, h [B, T, C]) -> scalar
LossFn = Callable[["LanguageModel", torch.Tensor], torch.Tensor]
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class LanguageModel(nn.Module):
    """`logits, state = model(idx, state=None, last_only=False)` for idx [B, T] token ids;
    `loss, state = model(idx, targets=targets)` in training; `loss, state = model(idx,
    loss_fn=fn)` for any other loss of the final features (distillation): fn(model, h) with h the
    normed features [B, T, C], called inside forward so that ZeRO-3 has the head gathered."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise UserError("model.vocab_size is unset: take it from the data's tokenizer or set it")
        self.cfg = cfg
        self.cache_dtype = DTYPES[cfg.cache_dtype]
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        norm = NORMS[cfg.norm]
        # on the embeddings (the reference's blocks.0.ln0); a transformer has none (emb_norm=False)
        self.ln0 = norm(cfg.n_embd, cfg.norm_eps) if cfg.emb_norm else nn.Identity()
        self.blocks = nn.ModuleList()
        self.ln_out = norm(cfg.n_embd, cfg.norm_eps)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.grad_ckpt = False  # recompute each block in the backward pass (train.grad_ckpt)
        self.fused_ce = False   # loss through kernels.fused_linear_cross_entropy (train.fused_ce)
        self.l2wrap = 0.0       # L2Wrap logit penalty (train.l2wrap), set by the trainer

    def check_input(self, idx: torch.Tensor, state: ModelState | None) -> ModelState:
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be an integer tensor [B, T]; got {tuple(idx.shape)} {idx.dtype}")
        if idx.shape[1] == 0:
            raise ValueError("idx holds no tokens (T = 0)")
        # the range check reads the ids back to the host: on an accelerator that is a sync per
        # forward, so training there trusts the data dir (whose vocab the trainer checked)
        on_host = idx.device.type == "cpu"
        if idx.device.type != "meta" and idx.numel() and (on_host or not self.training):
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.cfg.vocab_size:
                bad = hi if hi >= self.cfg.vocab_size else lo
                raise UserError(f"token id {bad} is outside the vocabulary "
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

    def stored_dtype(self, like: torch.Tensor) -> torch.dtype:
        """The dtype of what the state keeps per token: the working dtype while training with
        gradients (training never rounds keys through the cache format), else the compact one."""
        return like.dtype if self.training and torch.is_grad_enabled() else self.cache_dtype

    def output(self, x: torch.Tensor, last_only: bool, return_hidden: bool = False,
               targets: torch.Tensor | None = None, loss_fn: LossFn | None = None) -> torch.Tensor:
        """Logits; or, with return_hidden, the normed features the head multiplies; or, given
        targets [B, T], the mean next-token cross-entropy (ids < 0 ignored)."""
        h = self.ln_out(x[:, -1:] if last_only else x)
        if loss_fn is not None:
            return loss_fn(self, h)
        if targets is not None:
            return self.lm_loss(h, targets)
        return h if return_hidden else self.head(h)

    def lm_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Computed inside forward so that ZeRO-3 has the head gathered when the fused kernel
        reads its weight directly; the fused path never materialises [tokens x vocab] logits."""
        h, targets = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        if self.fused_ce:
            from kernels import fused_linear_cross_entropy
            return fused_linear_cross_entropy(h, self.head.weight, targets, l2wrap=self.l2wrap)
        from kernels import cross_entropy_l2wrap
        return cross_entropy_l2wrap(self.head(h), targets, self.l2wrap)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.emb.weight.numel() if exclude_embeddings else n
