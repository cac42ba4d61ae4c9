"""Compute kernels (imports nothing else of ours): WKV6, WKV7 and friends, each with a plain reference."""
from .fused_ce import cross_entropy_l2wrap, fused_linear_cross_entropy
from .wkv6 import backend_default as wkv_backend_default
from .wkv6 import default_backend as default_wkv_backend
from .wkv6 import set_default_backend as set_wkv_backend
from .wkv6 import wkv6
from .wkv7 import wkv7

__all__ = ["wkv6", "wkv7", "fused_linear_cross_entropy", "cross_entropy_l2wrap", "set_wkv_backend",
           "default_wkv_backend", "wkv_backend_default"]
