"""Read a reference checkpoint's architecture and sizes from its parameter names and shapes.

The reference saves raw state dicts with no config, so everything the weights can say is taken
from them; what they cannot say (ctx_len, and the head size of a Llama) comes from key=value
overrides or the reference's own defaults.
"""
from __future__ import annotations

import re

import torch

from common.errors import ConfigError, UserError

from ..config import ModelConfig, load_model_config
from ..parts import CHANNEL_MIXERS, TIME_MIXERS
from ..rwkv7_time_mix import lora_width

# the reference's defaults for what no weight records
REFERENCE_DEFAULTS = {"ctx_len": 1024, "head_size": 64}
PAPER_RATIOS = (3, 6, 2)  # the gold ratios the paper trains, tried first when several fit


CHECKPOINT_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
# (block kind, the keys that tell its look-alike variants apart, what to say)
LOOKALIKES = (
    ("finch_c2", ("c2_one_minus_w", "c2_v2"),
     "Finch-C2 blocks: the reference's ablations no_one_minus_w and no_v2 have the same tensors "
     "as Finch-C2; say which with c2_one_minus_w=true|false c2_v2=true|false (Finch-C2 itself, "
     "as in GoldFinch: both true)"),
    ("gold", ("gold_rope_theta",),
     "GOLD blocks: the rope10k ablation has the same tensors as the paper's GoldFinch; say which "
     "with gold_rope_theta=null (no RoPE in GOLD, the paper's main) or gold_rope_theta=10000 "
     "(rope10k)"),
)


class ConvertError(UserError):
    """A checkpoint that cannot be converted; the message names the file and the problem."""


def _shape(sd: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConvertError(f"missing key {key!r}")
    return tuple(sd[key].shape)


def _part_at(sd: dict[str, torch.Tensor], prefix: str, table: dict, what: str) -> str:
    """The registered part whose authors' signature key is under `prefix` (exactly one)."""
    found = [name for name, cls in table.items() if prefix + cls.ref_signature in sd]
    if len(found) != 1:
        known = ", ".join(f"{n} ({cls.ref_signature})" for n, cls in table.items())
        raise ConvertError(f"{prefix[:-1]}: {'no' if not found else 'more than one'} known {what} "
                           f"matches its keys; known kinds and their signature keys: {known}")
    return found[0]


def refuse_lookalikes(cfg: ModelConfig, overrides: list[str] | None) -> None:
    """The reference's ablations leave the tensors as they are: the overrides must say which."""
    said = {o.split("=", 1)[0].removeprefix("model.") for o in overrides or []}
    kinds = {cfg.lower_mixer} | ({"gold"} if cfg.n_gold else set())
    for kind, keys, choices in LOOKALIKES:
        if kind in kinds and not set(keys) <= said:
            raise ConvertError(choices)


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
    kinds = [_part_at(sd, f"blocks.{i}.att.", TIME_MIXERS, "time mix") for i in range(n_layer)]
    fields: dict[str, object] = dict(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab,
                                     ctx_len=REFERENCE_DEFAULTS["ctx_len"])
    if sd["emb.weight"].dtype in CHECKPOINT_DTYPES:  # a converted model keeps what it was given
        fields["cache_dtype"] = CHECKPOINT_DTYPES[sd["emb.weight"].dtype]
    first = "blocks.0.att."
    lower = kinds[0]
    n_lower = n_layer if lower == "llama" else kinds.index("gold") if "gold" in kinds else n_layer
    if lower == "gold" or kinds[:n_lower] != [lower] * n_lower or any(
            k != "gold" for k in kinds[n_lower:]):
        raise ConvertError(f"block kinds {kinds}: expected blocks of one kind (recurrent or "
                           "Llama), then GOLD blocks above recurrent ones")
    cmix = _part_at(sd, "blocks.0.ffn.", CHANNEL_MIXERS, "channel mix")
    try:
        sizes = TIME_MIXERS[lower].infer_fields(sd, first)
        if n_lower < n_layer:
            sizes.update(TIME_MIXERS["gold"].infer_fields(sd, f"blocks.{n_lower}.att."))
    except KeyError as err:
        raise ConvertError(f"missing key {err.args[0]!r}") from None
    fields.update(cmix=cmix, dim_ffn=_shape(sd, f"blocks.0.ffn.{CHANNEL_MIXERS[cmix].width_key}")[0],
                  **sizes)
    if lower == "llama":
        fields.update(arch="llama", head_size=REFERENCE_DEFAULTS["head_size"])
    else:
        arch = "goldfinch" if n_lower < n_layer else "rwkv7" if lower == "rwkv7" else "finch"
        fields.update(arch=arch, lower=lower)
        if n_lower < n_layer:
            compressed = _shape(sd, "w_kv_cache_a.weight")[0]
            if n_embd % compressed:
                raise ConvertError(f"w_kv_cache_a.weight is {compressed} wide: not n_embd={n_embd} "
                                   "divided by a whole compression ratio")
            fields.update(gold_ratio=_gold_ratio(n_layer, n_lower), kv_compression=n_embd // compressed)
    try:
        return _simplest(load_model_config(None, overrides, **fields))
    except ConfigError as err:
        raise ConvertError(f"bad key=value override: {err}") from None


def _simplest(cfg: ModelConfig) -> ModelConfig:
    """Drop explicit widths, mixers and LoRA sizes that equal what the config would derive
    anyway, so the written config.json reads like a hand-made one."""
    from dataclasses import replace

    derived = {"dim_att": "att_width", "cmix": "channel_mixer", "dim_ffn": "ffn_width",
               "lower": "lower_mixer"}
    for key, prop in derived.items():  # cmix before dim_ffn: the width derives from the mix
        if getattr(cfg, key) is not None:
            try:
                plain = replace(cfg, **{key: None})
            except ValueError:  # the key is needed (e.g. lower=rwkv7 with its LoRA widths)
                continue
            if getattr(plain, prop) == getattr(cfg, prop):
                cfg = plain
    for kind in ("w", "a", "v", "g"):
        if getattr(cfg, f"x070_lora_{kind}") == lora_width(kind, cfg.n_embd):
            cfg = replace(cfg, **{f"x070_lora_{kind}": None})
    return cfg
