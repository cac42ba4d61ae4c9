"""Initialisation as the paper's reference code does it, for every architecture.

Matrices are orthogonal with gain 1, except: zero for the time-mix output and the channel mix's
value and receptance, gain 0.1 for the Finch key and gate; embeddings uniform ±1e-4; the head
orthogonal with gain 0.5·sqrt(vocab/n_embd) (0.5 when vocab ≤ n_embd); LoRA A zero and B uniform
±0.01; LayerNorms ones and zeros, except the time mix's ln_x weight ((layer+1)/L)^0.7. The token-
shift amounts, decay bases and bonuses follow RWKV-6's layer-dependent schedules.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import FinchBlock, GoldBlock, LlamaBlock
from .channel_mix import ChannelMix
from .finch_time_mix import FinchTimeMix, _FinchFamily
from .gold_time_mix import GoldTimeMix
from .kv_compression import KeyCompression
from .token_mixing import DDLerp, TanhLoRA


def _ratios(layer: int, n_layer: int) -> tuple[float, float]:
    """(0 -> 1 with depth, 1 -> ~0 with depth): RWKV's layer-dependent init schedules."""
    return layer / max(n_layer - 1, 1), 1.0 - layer / n_layer


def _lerp_amounts(dim: int, r01: float, r10: float, device) -> dict[str, torch.Tensor]:
    ddd = torch.arange(dim, device=device, dtype=torch.float32) / dim
    base = 1.0 - ddd.pow(r10)
    half = 1.0 - ddd.pow(0.5 * r10)
    value = 1.0 - (ddd.pow(r10) + 0.3 * r01)
    return {"x": base, "r": half, "g": half, "q": half, "k": base, "w": base, "v": value, "v2": value}


def _init_ddlerp(mix: DDLerp, r01: float, r10: float) -> None:
    amounts = _lerp_amounts(mix.mu_x.numel(), r01, r10, mix.mu_x.device)
    mix.mu_x.copy_(amounts["x"])
    for i, name in enumerate(mix.names):
        mix.mu[i].copy_(amounts[name])
    nn.init.zeros_(mix.lora_a)
    nn.init.uniform_(mix.lora_b, -0.01, 0.01)


def _init_lora(lora: TanhLoRA) -> None:
    nn.init.zeros_(lora.a)
    nn.init.uniform_(lora.b, -0.01, 0.01)


def _orthogonal(linear: nn.Linear, gain: float = 1.0) -> None:
    nn.init.orthogonal_(linear.weight, gain=gain)


def _bonus_schedule(n_head: int, head_size: int, r01: float, device) -> torch.Tensor:
    n = torch.arange(n_head * head_size, device=device, dtype=torch.float32)
    frac = n / max(n.numel() - 1, 1)
    return (r01 * (1.0 - frac) + ((n + 1) % 3 - 1) * 0.1).view(n_head, head_size)


def _init_finch_time_mix(att: _FinchFamily, layer: int, n_layer: int) -> None:
    r01, r10 = _ratios(layer, n_layer)
    _init_ddlerp(att.mix, r01, r10)
    _orthogonal(att.receptance)
    _orthogonal(att.key, 0.1)
    _orthogonal(att.value)
    nn.init.zeros_(att.output.weight)
    n = torch.arange(att.decay_base.numel(), device=att.decay_base.device, dtype=torch.float32)
    frac = n / max(att.decay_base.numel() - 1, 1)
    att.decay_base.copy_(-6.0 + 5.0 * frac.pow(0.7 + 1.3 * r01))
    _init_lora(att.decay_lora)
    att.ln_x.weight.fill_(((layer + 1) / n_layer) ** 0.7)
    nn.init.zeros_(att.ln_x.bias)
    bonus = _bonus_schedule(att.n_head, att.head_size, r01, att.decay_base.device)
    if isinstance(att, FinchTimeMix):
        att.bonus.copy_(bonus)
        _orthogonal(att.gate, 0.1)
    else:
        _init_lora(att.v2_lora)
        att.unused_bonus.copy_(bonus)


def _init_gold_time_mix(att: GoldTimeMix, layer: int, n_layer: int) -> None:
    r01, r10 = _ratios(layer, n_layer)
    _init_ddlerp(att.q_mix, r01, r10)
    _init_ddlerp(att.kv_mix, r01, r10)
    _orthogonal(att.query)
    _init_lora(att.k_lora)
    _init_lora(att.v_lora)
    nn.init.zeros_(att.output.weight)
    att.ln_x.weight.fill_(((layer + 1) / n_layer) ** 0.7)
    nn.init.zeros_(att.ln_x.bias)


def _init_channel_mix(ffn: ChannelMix, layer: int, n_layer: int) -> None:
    _, r10 = _ratios(layer, n_layer)
    amounts = _lerp_amounts(ffn.mu_k.numel(), 0.0, r10, ffn.mu_k.device)
    ffn.mu_k.copy_(amounts["k"])
    ffn.mu_r.copy_(amounts["k"])
    _orthogonal(ffn.key)
    nn.init.zeros_(ffn.receptance.weight)
    nn.init.zeros_(ffn.value.weight)


def _init_llama_block(block: LlamaBlock) -> None:
    """Every matrix orthogonal with gain 1 (q, k and v each on its own, as three maps)."""
    for part in block.att.qkv.weight.chunk(3, dim=0):
        nn.init.orthogonal_(part)
    for lin in (block.att.output, block.ffn.gate, block.ffn.up, block.ffn.down):
        _orthogonal(lin)


@torch.no_grad()
def init_weights(model) -> None:
    cfg = model.cfg
    nn.init.uniform_(model.emb.weight, -1e-4, 1e-4)
    head_gain = 0.5 * math.sqrt(cfg.vocab_size / cfg.n_embd) if cfg.vocab_size > cfg.n_embd else 0.5
    _orthogonal(model.head, head_gain)
    for i, block in enumerate(model.blocks):
        if isinstance(block, LlamaBlock):
            _init_llama_block(block)
            continue
        if isinstance(block, FinchBlock):
            _init_finch_time_mix(block.att, i, cfg.n_layer)
        elif isinstance(block, GoldBlock):
            _init_gold_time_mix(block.att, i, cfg.n_layer)
        _init_channel_mix(block.ffn, i, cfg.n_layer)
    comp = getattr(model, "kv_compression", None)
    if isinstance(comp, KeyCompression):
        _orthogonal(comp.compress)
        _orthogonal(comp.expand)
