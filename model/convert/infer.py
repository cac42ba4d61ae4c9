"""Read a reference checkpoint's architecture and sizes from its parameter names and shapes.

The reference saves raw state dicts with no config, so everything the weights can say is taken
from them; what they cannot say (ctx_len, and the head size of a Llama) comes from key=value
overrides or the reference's own defaults.
"""
from __future__ import annotations

import re

import torch

from ..config import ModelConfig, load_model_config

# the reference's defaults for what no weight records
REFERENCE_DEFAULTS = {"ctx_len": 1024, "head_size": 64}
PAPER_RATIOS = (3, 6, 2)  # the gold ratios the paper trains, tried first when several fit


class ConvertError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the problem."""


def _shape(sd: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConvertError(f"missing key {key!r}")
    return tuple(sd[key].shape)


def _block_kind(sd: dict[str, torch.Tensor], i: int) -> str:
    att = f"blocks.{i}.att."
    if att + "wq.weight" in sd:
        return "llama"
    if att + "time_maa_v_cache" in sd:
        return "gold"
    if att + "time_value2_w1" in sd:
        return "finch_c2"
    if att + "time_maa_g" in sd or att + "gate.weight" in sd:
        return "finch"
    raise ConvertError(f"block {i}: its time mix is none of RWKV-6 (x060), Finch-C2 (x060c2), "
                       "GOLD or Llama (no time_maa_g, time_value2_w1, time_maa_v_cache or wq)")


def _gold_ratio(n_layer: int, n_lower: int) -> int:
    candidates = list(PAPER_RATIOS) + [r for r in range(2, n_layer + 2) if r not in PAPER_RATIOS]
    for r in candidates:
        if int(n_layer * (r - 1) / r) == n_lower:
            return r
    raise ConvertError(f"{n_lower} recurrent blocks below {n_layer - n_lower} GOLD blocks match "
                       "no whole model.gold_ratio r (the lower int(L*(r-1)/r) blocks)")


def infer_config(sd: dict[str, torch.Tensor], overrides: list[str] | None = None) -> ModelConfig:
    """A ModelConfig for the reference state dict `sd`; `overrides` (`key=value`, as on the
    command line) win over what is inferred."""
    vocab, n_embd = _shape(sd, "emb.weight")
    indices = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not indices:
        raise ConvertError("no blocks.N.* keys: not a GoldFinch-family state dict")
    n_layer = max(indices) + 1
    kinds = [_block_kind(sd, i) for i in range(n_layer)]
    fields: dict[str, object] = dict(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab,
                                     ctx_len=REFERENCE_DEFAULTS["ctx_len"])
    first = "blocks.0.att."
    if kinds[0] == "llama":
        if set(kinds) != {"llama"}:
            raise ConvertError(f"block kinds {kinds} mix Llama with other blocks")
        fields.update(arch="llama", head_size=REFERENCE_DEFAULTS["head_size"],
                      dim_att=_shape(sd, first + "wq.weight")[0],
                      dim_ffn=_shape(sd, "blocks.0.ffn.w1.weight")[0])
    else:
        lower = kinds[0]
        n_lower = kinds.index("gold") if "gold" in kinds else n_layer
        if kinds[:n_lower] != [lower] * n_lower or any(k != "gold" for k in kinds[n_lower:]):
            raise ConvertError(f"block kinds {kinds}: expected recurrent blocks of one kind, "
                               "then GOLD blocks")
        n_head, head_size = _shape(sd, first + "time_faaaa")
        fields.update(arch="goldfinch" if n_lower < n_layer else "finch", lower=lower,
                      head_size=head_size, dim_att=n_head * head_size,
                      dim_ffn=_shape(sd, "blocks.0.ffn.key.weight")[0],
                      mix_lora_rank=_shape(sd, first + "time_maa_w2")[1],
                      decay_lora_rank=_shape(sd, first + "time_decay_w1")[1])
        if n_lower < n_layer:
            compressed = _shape(sd, "w_kv_cache_a.weight")[0]
            if n_embd % compressed:
                raise ConvertError(f"w_kv_cache_a.weight is {compressed} wide: not n_embd={n_embd} "
                                   "divided by a whole compression ratio")
            fields.update(gold_ratio=_gold_ratio(n_layer, n_lower), kv_compression=n_embd // compressed)
    from omegaconf.errors import OmegaConfBaseException

    try:
        return _simplest(load_model_config(None, overrides, **fields))
    except OmegaConfBaseException as err:
        raise ConvertError(f"bad key=value override: {str(err).splitlines()[0]}") from None


def _simplest(cfg: ModelConfig) -> ModelConfig:
    """Drop explicit widths and mixers that equal what the config would derive anyway, so the
    written config.json reads like a hand-made one."""
    from dataclasses import replace

    if cfg.dim_att == cfg.n_embd:
        cfg = replace(cfg, dim_att=None)
    if cfg.dim_ffn and cfg.dim_ffn == replace(cfg, dim_ffn=None).ffn_width:
        cfg = replace(cfg, dim_ffn=None)
    if cfg.lower is not None and cfg.lower == replace(cfg, lower=None).lower_mixer:
        cfg = replace(cfg, lower=None)
    return cfg
