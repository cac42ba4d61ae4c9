"""build_model: the one way to get a model from a ModelConfig."""
from __future__ import annotations

import torch

from .base import LanguageModel
from .config import ModelConfig
from .init import init_weights
from .stack import BlockStack


def build_model(cfg: ModelConfig, device: str | torch.device | None = None,
                dtype: torch.dtype | None = None) -> LanguageModel:
    """Build and initialise a model. On the `meta` device nothing is allocated or initialised:
    shapes and dtypes only, enough to measure state sizes of models too large for memory."""
    cfg.validate()
    device = torch.device(device or "cpu")
    with device:
        model = BlockStack(cfg)
    if device.type != "meta":
        init_weights(model)
    if dtype is not None:
        model.to(dtype)
    return model
