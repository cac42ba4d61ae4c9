"""Training FLOPs per token for each architecture, and MFU against the device's peak."""
from __future__ import annotations

import torch

from model import ModelConfig

# Dense bf16 peak (TFLOP/s) of common accelerators, by a substring of the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
                    "RTX 4090": 165.0, "V100": 125.0}


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in a matrix product per token (all matrices but the embedding)."""
    emb = model.emb.weight
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2 and p is not emb)


def flops_per_token(model: torch.nn.Module, cfg: ModelConfig, ctx_len: int | None = None) -> float:
    """Forward + backward FLOPs per trained token: 3x the forward (6N for the matrices).

    Attention (Llama layers, GOLD layers) adds 4·ctx·d per layer forward (scores and weighted sum,
    PaLM's convention, without halving for causality); WKV6 adds 4·d·head_size per layer.
    """
    ctx = ctx_len or cfg.ctx_len
    attention_layers = cfg.n_layer if cfg.arch == "llama" else cfg.n_gold
    forward = 2 * matmul_params(model)
    forward += attention_layers * 4 * ctx * cfg.att_width
    forward += cfg.n_finch * 4 * cfg.att_width * cfg.head_size
    return 3.0 * forward


def peak_flops(device: torch.device, configured_tflops: float | None) -> float | None:
    """The device's peak FLOP/s: the configured value, or a table lookup on CUDA; None if unknown."""
    if configured_tflops:
        return configured_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None
