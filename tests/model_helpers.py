"""Small models for tests: tiny widths so the whole suite stays fast on two cores."""
import torch

from model import ModelConfig, build_model

ARCHS = ("goldfinch", "finch", "llama", "rwkv7", "goldfinch7", "eagle")
# names of the variants that are an arch with another lower mixer
VARIANTS = {"goldfinch7": dict(arch="goldfinch", lower="rwkv7"), "eagle": dict(arch="finch", lower="eagle")}
VOCAB = 97


def tiny_config(arch: str, **kw) -> ModelConfig:
    fields = {"arch": arch, **VARIANTS.get(arch, {})}
    fields.update(n_layer=6, n_embd=64, head_size=16, vocab_size=VOCAB, ctx_len=64,
                  cache_dtype="float32", mix_lora_rank=8, decay_lora_rank=8)
    fields.update(kw)
    return ModelConfig(**fields)


def tiny_model(arch: str, perturb: float = 0.05, **kw):
    """A tiny model whose zero-initialised maps are perturbed, so every path carries signal."""
    model = build_model(tiny_config(arch, **kw))
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * perturb)
    return model
