"""GoldFinch, GoldFinch-7 and their baselines (Finch, RWKV-7, Eagle, Llama), assembled from
registered parts, with stateful (cached) inference."""
from .base import LanguageModel
from .build import build_model
from .config import ModelConfig, load_model_config
from .exported import load_exported, save_exported
from .state import BlockState, ModelState

__all__ = ["BlockState", "LanguageModel", "ModelConfig", "ModelState", "build_model",
           "load_exported", "load_model_config", "save_exported"]
