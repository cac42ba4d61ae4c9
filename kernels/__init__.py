"""Compute kernels (imports nothing else of ours): WKV6 and friends, each with a plain reference."""
from .wkv6 import wkv6

__all__ = ["wkv6"]
