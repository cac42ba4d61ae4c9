"""The registries of model parts: a new mixer is one file plus one line here.

Closed tables, imported at the top: the parts import nothing of the model's own assembly
(config, blocks, stack), so there is no cycle.
"""
from __future__ import annotations

from torch import nn

from .channel_mix import ChannelMix, ChannelMixX052, ChannelMixX070
from .eagle_time_mix import EagleTimeMix
from .finch_time_mix import FinchC2TimeMix, FinchTimeMix
from .gold_time_mix import GoldTimeMix
from .llama_attention import LlamaAttention
from .part import ChannelMixer, TimeMixer
from .rwkv7_time_mix import RWKV7TimeMix
from .swiglu import SwiGLU

TIME_MIXERS: dict[str, type[TimeMixer]] = {
    "finch": FinchTimeMix,        # RWKV-6 (x060)
    "finch_c2": FinchC2TimeMix,   # GoldFinch's Finch-C2 (x060c2)
    "rwkv7": RWKV7TimeMix,        # RWKV-7 "Goose" (x070)
    "eagle": EagleTimeMix,        # RWKV-5 (x052)
    "gold": GoldTimeMix,          # GOLD attention over the compressed key cache
    "llama": LlamaAttention,      # the paper's Llama attention
}

CHANNEL_MIXERS: dict[str, type[ChannelMixer]] = {
    "x060": ChannelMix,
    "x070": ChannelMixX070,
    "x052": ChannelMixX052,
    "swiglu": SwiGLU,
}


def _layer_norm(dim: int, eps: float | None = None) -> nn.Module:
    return nn.LayerNorm(dim, eps=1e-5 if eps is None else eps)


def _rms_norm(dim: int, eps: float | None = None) -> nn.Module:
    return nn.RMSNorm(dim, eps=1e-6 if eps is None else eps)


# norm constructors (dim, eps); eps None: the norm's default (model.norm_eps unset)
NORMS = {"layernorm": _layer_norm, "rmsnorm": _rms_norm}


def recurrent_mixers() -> tuple[str, ...]:
    """The mixers that can stand below GOLD (model.lower)."""
    return tuple(n for n, cls in TIME_MIXERS.items() if cls.family == "recurrent")


def mixer_of_block(names: set[str]) -> str | None:
    """The mixer of a block whose parameter names (under `blocks.N.`) are `names`: the one whose
    signature they all contain (None if none does)."""
    found = [name for name, cls in TIME_MIXERS.items() if set(cls.signature) <= names]
    return found[0] if len(found) == 1 else None
