"""Where Triton kernels may run: lazy import, interpreter detection, one-time warnings.

Triton is imported only when a Triton backend is asked for, so `import kernels` works on a
machine whose Triton is missing or broken. Triton decides at decoration time whether a
`@triton.jit` function is compiled or interpreted, so TRITON_INTERPRET=1 must be set before
the first Triton kernel module is imported.
"""
from __future__ import annotations

import importlib
import os
import warnings

import torch

INTERPRET_ENV = "TRITON_INTERPRET"
_warned: set[str] = set()


class TritonUnavailable(RuntimeError):
    """Triton cannot run these tensors here; the message says why and what to do."""


def import_triton():
    """The triton module, or TritonUnavailable carrying the import error."""
    try:
        return importlib.import_module("triton")
    except Exception as err:  # broken installs raise more than ImportError
        raise TritonUnavailable(f"Triton is not importable here ({type(err).__name__}: {err})") from err


def interpreting() -> bool:
    """True when Triton runs (or will run) its kernels through the CPU interpreter."""
    return os.environ.get(INTERPRET_ENV, "0") == "1"


def is_interpreted(kernel) -> bool:
    """Whether an already-decorated kernel object was built for the interpreter."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_runnable(x: torch.Tensor, kernel, what: str) -> None:
    """Raise TritonUnavailable unless `kernel` can take tensors on x's device."""
    interpreted = is_interpreted(kernel)
    if x.device.type == "cuda" and not interpreted:
        return
    if x.device.type == "cpu" and interpreted:
        return
    if x.device.type == "cpu":
        raise TritonUnavailable(
            f"{what}: Triton runs on CPU tensors only in interpreter mode; set {INTERPRET_ENV}=1 in "
            "the environment before triton is first imported (or use a CUDA device)")
    if x.device.type == "cuda":
        raise TritonUnavailable(f"{what}: the Triton kernels were built for the CPU interpreter "
                                f"({INTERPRET_ENV}=1); unset it to run them on CUDA")
    raise TritonUnavailable(f"{what}: Triton cannot run tensors on device {x.device}")


def warn_once(message: str) -> None:
    """warnings.warn, but only the first time this exact message comes up in the process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
