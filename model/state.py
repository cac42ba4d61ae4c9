"""Inference state: what a model carries from one piece of a sequence to the next."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


@dataclass
class BlockState:
    """One block's carry: token-shift inputs, the WKV matrix (Finch) or the K/V cache (Llama)."""
    att_shift: torch.Tensor | None = None  # [B, C] last input of the time mix
    ffn_shift: torch.Tensor | None = None  # [B, C] last input of the channel mix
    wkv: torch.Tensor | None = None        # [B, H, K, V] fp32
    k: torch.Tensor | None = None          # [B, H, T, hd] (Llama only)
    v: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class ModelState:
    """Everything needed to continue a batch of sequences.

    GoldFinch keeps, per token, only the compressed key vector and the token id (`compressed`,
    `tokens`): GOLD keys and values are regenerated from them. Finch keeps no per-token data.
    """
    arch: str
    batch_size: int
    blocks: list[BlockState] = field(default_factory=list)
    seen: int = 0
    compressed: torch.Tensor | None = None  # [B, T, n_embd/kv_compression] in the cache dtype
    tokens: torch.Tensor | None = None      # [B, T] int32

    def check(self, arch: str, batch_size: int, n_blocks: int) -> None:
        if self.arch != arch:
            raise ValueError(f"state is from arch {self.arch!r}, but this model is {arch!r}")
        if self.batch_size != batch_size:
            raise ValueError(f"state holds batch size {self.batch_size}, but idx has batch size "
                             f"{batch_size}")
        if len(self.blocks) != n_blocks:
            raise ValueError(f"state holds {len(self.blocks)} blocks, but this model has {n_blocks}")

    def cache_bytes(self) -> int:
        """Bytes of the per-token cache: grows with every token (compressed keys + ids, or K/V)."""
        per_token = [self.compressed, self.tokens] + [t for b in self.blocks for t in (b.k, b.v)]
        return sum(_nbytes(t) for t in per_token)

    def recurrent_bytes(self) -> int:
        """Bytes of the fixed-size part: WKV matrices and token-shift vectors."""
        return sum(_nbytes(t) for b in self.blocks for t in (b.att_shift, b.ffn_shift, b.wkv))

    def detach(self) -> "ModelState":
        """A copy cut from the autograd graph (truncated back-propagation through time)."""
        def cut(t):
            return None if t is None else t.detach()
        blocks = [BlockState(**{f.name: cut(getattr(b, f.name)) for f in fields(b)})
                  for b in self.blocks]
        return replace(self, blocks=blocks, compressed=cut(self.compressed), tokens=cut(self.tokens))
