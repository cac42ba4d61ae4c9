"""Checkpoints of the paper's reference implementation (recursal/GoldFinch-paper) in and out,
and students built from a transformer teacher (`from_transformers`, in its own module).

`import_reference(SRC.pth, DIR)` writes an exported model dir (`model.safetensors` + `config.json`);
`export_reference(DIR, DST.pth)` writes the reference's state dict back, names, shapes and dtypes
exactly as its code defines them, so it loads there with strict=True. Conversion never does
arithmetic on a tensor: import then export gives the same bytes.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path

import torch

from ..config import ModelConfig
from .from_transformers import from_transformers
from .infer import ConvertError, infer_config, refuse_lookalikes
from .layout import reference_rules
from .teacher import Teacher, read_teacher

__all__ = ["ConvertError", "Teacher", "export_reference", "from_reference", "from_transformers",
           "import_reference", "infer_config", "read_reference", "read_teacher", "to_reference"]


def _rules(cfg: ModelConfig):
    from ..build import build_model

    return reference_rules(cfg, build_model(cfg, device="meta"))


def read_reference(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a `.pth` state dict without running any pickled code (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(f"{path}: not a readable PyTorch state dict (truncated, or not saved "
                           f"by torch.save?): {first}") from None
    if not isinstance(sd, dict) or not sd or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ConvertError(f"{path}: holds a {type(sd).__name__}, not a state dict of named tensors")
    return sd


def _check_keys(sd: dict[str, torch.Tensor], rules) -> None:
    expected = {ref: shape for r in rules for ref, shape in zip(r.refs, r.ref_shapes)}
    unknown = [k for k in sd if k not in expected]
    if unknown:
        raise ConvertError(f"{len(unknown)} unknown key(s) for the inferred architecture: "
                           f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    missing = [k for k in expected if k not in sd]
    if missing:
        raise ConvertError(f"{len(missing)} missing key(s): {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}")
    wrong = [f"{k} is {tuple(sd[k].shape)}, expected {shape}" for k, shape in expected.items()
             if tuple(sd[k].shape) != shape]
    if wrong:
        raise ConvertError(f"{len(wrong)} shape mismatch(es): {'; '.join(wrong[:3])}")


# RWKV-LM's GPT-mode demo models give every block an LN0 that only block 0 applies; the released
# files hold block 0's alone. The others are dropped on import: no computation reads them.
UNUSED_LN0 = re.compile(r"blocks\.([1-9]\d*)\.ln0\.(weight|bias)$")


def from_reference(sd: dict[str, torch.Tensor], overrides: list[str] | None = None,
                   tensors_only: bool = False) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(our config, our state dict) for a reference state dict; dtypes are kept. With
    `tensors_only` (the caller wants the weights, not a model to run) variants whose tensors
    are alike are not asked about."""
    sd = {k: v for k, v in sd.items() if not UNUSED_LN0.match(k)}
    cfg = infer_config(sd, overrides)
    rules = _rules(cfg)
    _check_keys(sd, rules)
    if not tensors_only:
        refuse_lookalikes(cfg, overrides)
    ours = {r.ours: r.to_ours([sd[k] for k in r.refs]).contiguous().clone() for r in rules}
    return cfg, ours


def to_reference(cfg: ModelConfig, ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's state dict (its names, shapes and order) for our weights."""
    rules = _rules(cfg)
    missing = [r.ours for r in rules if r.ours not in ours]
    if missing:
        raise ConvertError(f"{len(missing)} of this model's tensors are missing: {', '.join(missing[:5])}")
    out: dict[str, torch.Tensor] = {}
    for r in rules:
        for name, t in zip(r.refs, r.to_ref(ours[r.ours])):
            out[name] = t.contiguous().clone()
    return out


def _replace_atomically(dst: Path, write) -> None:
    """Write through a temporary sibling, renamed into place only once complete."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def import_reference(src: str | Path, out_dir: str | Path, overrides: list[str] | None = None
                     ) -> ModelConfig:
    """SRC.pth -> out_dir/model.safetensors + out_dir/config.json (loadable with load_exported)."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    try:
        cfg, ours = from_reference(read_reference(src), overrides)
    except ConvertError as err:
        msg = str(err)
        raise ConvertError(msg if msg.startswith(str(src)) else f"{src}: {msg}") from None
    out = Path(out_dir)
    _replace_atomically(out / "model.safetensors", lambda p: save_file(
        ours, str(p), metadata={"format": "pt", "arch": cfg.arch, "source": "reference"}))
    _replace_atomically(out / "config.json",
                        lambda p: p.write_text(json.dumps(asdict(cfg), indent=1) + "\n"))
    return cfg


def export_reference(model_dir: str | Path, dst: str | Path) -> dict[str, torch.Tensor]:
    """An exported model dir -> the reference's `.pth` state dict at dst."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    for name in ("config.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            raise ConvertError(f"{model_dir / name} is missing: not an exported model directory "
                               "(python -m pipeline.export, or model.convert import, makes one)")
    cfg = ModelConfig(**json.loads((model_dir / "config.json").read_text()))
    try:
        ref = to_reference(cfg, load_file(str(model_dir / "model.safetensors")))
    except ConvertError as err:
        raise ConvertError(f"{model_dir}: {err}") from None
    _replace_atomically(Path(dst), lambda p: torch.save(ref, p))
    return ref
