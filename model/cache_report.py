"""Measure inference-cache bytes per token: GoldFinch vs a Llama-style cache of the same shape.

    python -m model.cache_report                        # the paper's two sizes
    python -m model.cache_report --preset L12-D768 model.n_layer=16

Each size is measured by pre-filling a real model state and asking it for `cache_bytes()`;
models too large for memory are built on the `meta` device (shapes and dtypes, no data).
Prints one JSON object per size.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import torch

from common.cli import command

from .build import build_model
from .config import ModelConfig, load_model_config

DEFAULT_PRESETS = ("L24-D2048", "L80-D8192")
META_ABOVE_PARAMS = 300_000_000


def llama_style_bytes_per_token(cfg: ModelConfig) -> int:
    """The K/V cache a Llama of this depth and width keeps per token: bf16 keys and values in
    every layer, no grouped-query sharing (the paper's comparison)."""
    return 2 * 2 * cfg.n_layer * cfg.n_embd


def estimated_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return build_model(cfg, device="meta").num_params()


@torch.no_grad()
def bytes_per_token(cfg: ModelConfig, tokens: int, device: str) -> tuple[float, int]:
    """(per-token cache bytes, fixed recurrent bytes) after pre-filling `tokens` tokens."""
    model = build_model(cfg, device=device, dtype=torch.bfloat16)
    idx = torch.randint(0, cfg.vocab_size, (1, tokens), device=device)
    _, state = model(idx, last_only=True)
    return state.cache_bytes() / tokens, state.recurrent_bytes()


def report(cfg: ModelConfig, tokens: int = 64, device: str = "auto") -> dict:
    cfg = replace(cfg, arch="goldfinch", cache_dtype="bfloat16", vocab_size=cfg.vocab_size or 65536)
    if device == "auto":
        device = "meta" if estimated_params(cfg) > META_ABOVE_PARAMS else "cpu"
    gold, recurrent = bytes_per_token(cfg, tokens, device)
    llama_cfg = replace(cfg, arch="llama", lower=None, cmix=None, x070_lora_w=None,
                        x070_lora_a=None, x070_lora_v=None, x070_lora_g=None)
    llama, _ = bytes_per_token(llama_cfg, tokens, device)
    return {
        "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "lower": cfg.lower_mixer,
        "kv_compression": cfg.kv_compression,
        "prefill_tokens": tokens, "device": device,
        "goldfinch_bytes_per_token": gold, "llama_bytes_per_token": llama,
        "ratio": round(llama / gold, 3),
        "goldfinch_recurrent_bytes": recurrent,
        "formula_goldfinch": 2 * cfg.compressed_width + 4,
        "formula_llama": llama_style_bytes_per_token(cfg),
    }


@command("cache_report")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", help="configs/model preset (repeatable)")
    parser.add_argument("--tokens", type=int, default=64, help="pre-fill length")
    parser.add_argument("--device", default="auto", help="cpu, cuda, meta or auto")
    parser.add_argument("overrides", nargs="*", help="model.key=value")
    args = parser.parse_args(argv)
    presets = args.preset or ([None] if args.overrides else list(DEFAULT_PRESETS))
    for preset in presets:
        cfg = load_model_config(preset, args.overrides)
        print(json.dumps(report(cfg, args.tokens, args.device)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
