"""Exported models: `model.safetensors` + `config.json`, loadable without the training stack."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from .base import LanguageModel
from .bone import wrap_like
from .build import build_model
from .config import ModelConfig

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_exported(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, out_dir: str | Path) -> Path:
    """Write the weights and config so that the same tensors always give the same bytes.

    safetensors writes its `__metadata__` from a hash map whose order changes from process to
    process; the header is rewritten in place with sorted keys (same length: the same compact JSON
    in another order). The data layout is safetensors' own, which depends on dtypes and names only.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sorted(state_dict.items())}
    save_file(tensors, str(out / WEIGHTS), metadata={"arch": cfg.arch, "format": "pt"})
    with open(out / WEIGHTS, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        meta = header.pop("__metadata__", None)
        ordered = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
        ordered.update(sorted(header.items()))
        text = json.dumps(ordered, separators=(",", ":")).encode()
        if len(text) > size:
            raise ValueError(f"{out / WEIGHTS}: the sorted header grew ({len(text)} > {size} bytes)")
        fh.seek(8)
        fh.write(text.ljust(size, b" "))  # safetensors pads its header with spaces too
    (out / CONFIG).write_text(json.dumps(asdict(cfg), indent=1, sort_keys=True) + "\n")
    return out


def load_exported(path: str | Path, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None) -> LanguageModel:
    """Build the model described by config.json and load model.safetensors into it (strictly)."""
    from safetensors.torch import load_file

    path = Path(path)
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing: not an exported model directory")
    cfg = ModelConfig(**json.loads((path / CONFIG).read_text()))
    model = build_model(cfg, device=device)
    weights = load_file(str(path / WEIGHTS), device=str(device or "cpu"))
    wrap_like(model, weights)  # an unmerged Bone/Bat export: its Linears carry their blocks
    model.load_state_dict(weights, strict=True)
    if dtype is not None:
        model.to(dtype)
    return model
