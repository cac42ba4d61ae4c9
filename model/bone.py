"""Bone and Bat (arXiv 2409.15371, as RWKV-PEFT computes them): block-wise weight updates that
fine-tune a frozen Linear with few parameters.

A wrapped Linear keeps its frozen base matrix as `weight` (the same parameter name as before, so
checkpoints, ZeRO and the freeze selectors see the same tensor) and adds one trainable tensor:

- `bat`  (the paper's Bone, "block affine"): `bat` [in/r, r, r], one matrix B_b per column block;
  the r x r block W_ab of the weight becomes W_ab + W_ab B_b + B_b.
- `bone` (RWKV-PEFT's current variant): `bone` [r, out]; dW[o, i] = D[i mod r, o], computed as
  x summed over its r-wide chunks times D, without forming dW.

Both start at zero, so the wrapped model computes exactly what the base does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError


METHODS = ("bone", "bat")


class BoneLinear(nn.Linear):
    """y = x W^T + (x summed over r-wide chunks, zero-padded) D."""

    tensor_name = "bone"

    def __init__(self, base: nn.Linear, r: int):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.r = base.in_features, base.out_features, r
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        self.bone = nn.Parameter(torch.zeros(r, base.out_features, device=base.weight.device,
                                             dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = -self.in_features % self.r
        xs = F.pad(x, (0, pad)) if pad else x
        chunks = xs.reshape(*xs.shape[:-1], xs.shape[-1] // self.r, self.r).sum(dim=-2)
        return F.linear(x, self.weight, self.bias) + chunks @ self.bone

    def delta(self) -> torch.Tensor:
        return bone_delta(self.weight, self.bone)


class BatLinear(nn.Linear):
    """y = x (W + dW)^T with dW_ab = W_ab B_b + B_b; dW is formed each forward (one extra
    weight-sized temporary), which autograd needs anyway for the gradient of B."""

    tensor_name = "bat"

    def __init__(self, base: nn.Linear, r: int):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.r = base.in_features, base.out_features, r
        self.weight = base.weight
        self.register_parameter("bias", base.bias)
        self.bat = nn.Parameter(torch.zeros(base.in_features // r, r, r, device=base.weight.device,
                                            dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight + self.delta(), self.bias)

    def delta(self) -> torch.Tensor:
        return bat_delta(self.weight, self.bat)


def bat_delta(weight: torch.Tensor, bat: torch.Tensor) -> torch.Tensor:
    """dW for a [out, in] weight: blocks [a, b, r, r] times B_b, plus B_b."""
    out, inp = weight.shape
    r = bat.shape[-1]
    blocks = weight.reshape(out // r, r, inp // r, r).permute(0, 2, 1, 3)
    delta = blocks @ bat + bat
    return delta.permute(0, 2, 1, 3).reshape(out, inp)


def bone_delta(weight: torch.Tensor, bone: torch.Tensor) -> torch.Tensor:
    """dW [out, in]: column i is row i mod r of D."""
    idx = torch.arange(weight.shape[1], device=bone.device) % bone.shape[0]
    return bone[idx].t()


WRAPPERS = {"bone": BoneLinear, "bat": BatLinear}
DELTAS = {"bone": bone_delta, "bat": bat_delta}


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def find_targets(model: nn.Module, targets: list[str], known: tuple[str, ...] = ()
                 ) -> dict[str, nn.Linear]:
    """The Linear modules whose path ends with one of `targets`. A target that matches nothing is
    an error unless it is in `known` (the defaults name every architecture's matrices)."""
    linears = {n: m for n, m in model.named_modules() if type(m) is nn.Linear}
    found = {}
    for target in targets:
        hits = {n: m for n, m in linears.items() if _matches(n, target)}
        if not hits and target not in known:
            raise UserError(f"peft.targets: {target!r} names no Linear of this model (e.g. "
                            f"{', '.join(sorted({n.split('.', 2)[-1] for n in linears})[:8])})")
        found.update(hits)
    if not found:
        raise UserError(f"peft.targets={targets}: none of them is a Linear of this model")
    return found


def check_shapes(method: str, r: int, found: dict[str, nn.Linear]) -> None:
    """Bat tiles the weight into r x r blocks; Bone pads the input to a multiple of r."""
    if method not in METHODS:
        raise UserError(f"peft.method={method!r}: expected one of {', '.join(METHODS)} (or unset)")
    if r < 1:
        raise UserError(f"peft.r={r}: must be >= 1")
    for name, m in found.items():
        if method == "bat" and (m.in_features % r or m.out_features % r):
            raise UserError(f"peft.r={r}: bat needs r to divide both dims of every target; "
                            f"{name} is [{m.out_features}, {m.in_features}]")
        if method == "bone" and r > m.in_features:
            raise UserError(f"peft.r={r}: larger than the {m.in_features} input features of {name}")


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def wrap(model: nn.Module, method: str, r: int, targets: list[str],
         known: tuple[str, ...] = ()) -> list[str]:
    """Replace the target Linears in place; returns the names of the new trainable tensors."""
    found = find_targets(model, targets, known)
    check_shapes(method, r, found)
    names = []
    for name, linear in found.items():
        _replace(model, name, WRAPPERS[method](linear, r))
        names.append(f"{name}.{WRAPPERS[method].tensor_name}")
    return names


def wrap_like(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Wrap the Linears for which `state_dict` holds Bone/Bat tensors (an unmerged export)."""
    for key, t in state_dict.items():
        mod, _, kind = key.rpartition(".")
        if kind in WRAPPERS and type(model.get_submodule(mod)) is nn.Linear:
            r = t.shape[-1] if kind == "bat" else t.shape[0]
            _replace(model, mod, WRAPPERS[kind](model.get_submodule(mod), r))


def merge_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain state dict: each `X.weight` plus its dW (in fp32, cast back), the blocks dropped."""
    out = {k: v for k, v in sd.items() if k.rpartition(".")[2] not in WRAPPERS}
    for key, t in sd.items():
        mod, _, kind = key.rpartition(".")
        if kind in WRAPPERS:
            w = sd[f"{mod}.weight"]
            merged = w.float() + DELTAS[kind](w.float(), t.float())
            out[f"{mod}.weight"] = merged.to(w.dtype)
    return out


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Fold every wrapper back into a plain Linear holding W + dW, in place."""
    for name, m in list(model.named_modules()):
        if isinstance(m, (BoneLinear, BatLinear)):
            plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                              device=m.weight.device, dtype=m.weight.dtype)
            plain.weight.copy_((m.weight.float() + m.delta().float()).to(m.weight.dtype))
            if m.bias is not None:
                plain.bias.copy_(m.bias)
            _replace(model, name, plain)
    return model
