"""Slim PEFT checkpoints: a Bone/Bat run writes only what PEFT trains (the blocks and the
`train_also` tensors); the frozen base is rebuilt from `train.init_from` (or, without one, from
the run's seed) whenever the checkpoint is loaded.

The base is identified by a digest, sha256 over its tensors' names, shapes, dtypes and bytes
(sorted by name), computed once when the run's model is built and recorded in every checkpoint's
COMPLETE marker together with the init_from it came from. A resume or an export whose rebuilt
base has another digest is refused, naming both: the blocks mean nothing over other weights.

DeepSpeed writes the frozen tensors twice (the module's state dict, and at ZeRO-2/3 the
`frozen_param_*` entries zero_to_fp32 reads); both are dropped from the files it would write, and
filled back from the rebuilt model when it reads them, so its own load stays strict.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model import ModelConfig, build_model

from . import peft
from ..errors import PipelineError
from ..runs import read_marker

DIGEST_KEY = "peft_base_sha256"
SOURCE_KEY = "peft_base_from"
ATTR = "peft_base"
FROZEN_ENTRIES = ("frozen_param_shapes", "frozen_param_fragments")


@dataclass(frozen=True)
class BaseIdentity:
    digest: str
    names: frozenset
    source: str | None


def build_base(model_cfg: ModelConfig, peft_cfg: peft.PeftConfig, seed: int) -> nn.Module:
    """The wrapped model a PEFT run starts from before train.init_from: its seed's init, so the
    tensors init_from does not cover are rebuilt the same on resume and export."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_cfg)
    peft.attach(model, peft_cfg)
    return model


def digest(model: nn.Module, names) -> str:
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(names):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def identify(model: nn.Module, peft_cfg: peft.PeftConfig, source: str | None) -> BaseIdentity:
    """Name and digest the base of a wrapped model (everything PEFT does not train), and attach
    that identity to the model: checkpointing.save reads it there."""
    trained = peft.peft_names(model, peft_cfg)
    names = frozenset(n for n in model.state_dict() if n not in trained)
    identity = BaseIdentity(digest(model, names), names, source)
    setattr(model, ATTR, identity)
    return identity


def identity_of(module: nn.Module) -> BaseIdentity | None:
    return getattr(module, ATTR, None)


def marker_fields(module: nn.Module) -> dict:
    """What a checkpoint's COMPLETE marker records about the base (nothing without PEFT)."""
    identity = identity_of(module)
    return {DIGEST_KEY: identity.digest, SOURCE_KEY: identity.source} if identity else {}


def drop_base(module: nn.Module, pending: list) -> None:
    """Remove the base tensors from the state dicts DeepSpeed is about to write."""
    identity = identity_of(module)
    if identity is None:
        return
    for state, _ in pending:
        if not isinstance(state, dict) or "module" not in state:
            continue
        for key in ("module", *FROZEN_ENTRIES):
            if state.get(key) is not None:
                state[key] = type(state[key])((k, v) for k, v in state[key].items()
                                              if k not in identity.names)


class _FillingLoads:
    """Stands in for DeepSpeed's checkpoint engine while it loads: the base tensors a slim file
    lacks are taken from the module itself, which was rebuilt from the same base."""

    def __init__(self, inner, module: nn.Module, names: frozenset):
        self.inner, self.module, self.names = inner, module, names

    def load(self, *args, **kwargs):
        state = self.inner.load(*args, **kwargs)
        if isinstance(state, dict) and "module" in state:
            own = self.module.state_dict()
            for name in self.names:
                state["module"].setdefault(name, own[name])
            fragments = state.get("frozen_param_fragments")
            if fragments is not None:
                for name, p in self.module.named_parameters():
                    if name in self.names and name not in fragments:
                        fragments[name] = (p.ds_tensor if hasattr(p, "ds_id") else p).detach().cpu()
        return state

    def __getattr__(self, name):
        return getattr(self.inner, name)


@contextlib.contextmanager
def filled_loads(engine):
    identity = identity_of(engine.module)
    if identity is None:
        yield
        return
    inner = engine.checkpoint_engine
    engine.checkpoint_engine = _FillingLoads(inner, engine.module, identity.names)
    try:
        yield
    finally:
        engine.checkpoint_engine = inner


def recorded(tag_dir: Path) -> tuple[str | None, str | None]:
    """(base digest, init_from) a checkpoint's marker records; (None, None): a full checkpoint."""
    marker = read_marker(tag_dir)
    if marker is None:
        return None, None
    return marker.extra.get(DIGEST_KEY), marker.extra.get(SOURCE_KEY)


def check_base(tag_dir: Path, identity: BaseIdentity | None) -> None:
    """Refuse to load a slim checkpoint over a base other than the one it was trained on."""
    saved, saved_from = recorded(tag_dir)
    if saved is None or (identity is not None and identity.digest == saved):
        return
    now = identity.digest if identity else "none (this run has no peft.method)"
    raise PipelineError(
        f"{tag_dir} holds Bone/Bat tensors trained over a base with sha256 {saved} (train.init_from="
        f"{saved_from}), but train.init_from={identity.source if identity else None} now gives a base "
        f"with sha256 {now}: the blocks would be applied to other weights. Point train.init_from back "
        "at the weights the run started from, or fine-tune these in a new run (train.run_name=<new>)")
