"""How the reference implementation's parameters map onto ours, tensor by tensor.

The authors' checkpoints (recursal/GoldFinch-paper; RWKV-LM for x070 and x052) hold LN0 in block 0
and name the key compression at model level; inside a block each registered part maps its own
tensors (`Part.ref_rules`). Each `Rule` turns one of our tensors into the authors' tensors and
back, losslessly: only reshapes, concatenations and slot permutations, never arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import ModelConfig
from .infer import ConvertError

Shape = tuple[int, ...]

@dataclass(frozen=True)
class Rule:
    ours: str
    refs: tuple[str, ...]
    ref_shapes: tuple[Shape, ...]
    to_ours: Callable[[list[torch.Tensor]], torch.Tensor]
    to_ref: Callable[[torch.Tensor], list[torch.Tensor]]


def _same(ours: str, ref: str, ref_shape: Shape, our_shape: Shape) -> Rule:
    return Rule(ours, (ref,), (ref_shape,), lambda ts: ts[0].reshape(our_shape),
                lambda t: [t.reshape(ref_shape)])


def _stacked(ours: str, refs: tuple[str, ...], ref_shape: Shape, perm: list[int] | None = None) -> Rule:
    """Our [n, C] from n reference tensors of ref_shape (mu of every ddlerp slot); our row i is
    reference tensor perm[i]."""
    dim, perm = ref_shape[-1], perm or list(range(len(refs)))
    inverse = [perm.index(i) for i in range(len(perm))]
    return Rule(ours, refs, (ref_shape,) * len(refs),
                lambda ts: torch.cat([ts[j].reshape(1, dim) for j in perm]),
                lambda t: [t[i].reshape(ref_shape) for i in inverse])


def _permuted(ours: str, ref: str, ref_shape: Shape, perm: list[int], dim: int, groups: int) -> Rule:
    """A tensor whose `dim` holds `groups` equal slot blocks, reordered: ours[i] = ref[perm[i]]."""
    inverse = [perm.index(i) for i in range(len(perm))]

    def reorder(t: torch.Tensor, order: list[int]) -> torch.Tensor:
        return torch.cat([t.chunk(groups, dim=dim)[i] for i in order], dim=dim)
    return Rule(ours, (ref,), (ref_shape,), lambda ts: reorder(ts[0], perm),
                lambda t: [reorder(t, inverse)])


def _concatenated(ours: str, refs: tuple[str, ...], ref_shape: Shape) -> Rule:
    """Our fused matrix from reference matrices stacked along dim 0 (Llama's q, k, v)."""
    return Rule(ours, refs, (ref_shape,) * len(refs), lambda ts: torch.cat(ts, dim=0),
                lambda t: list(t.chunk(len(refs), dim=0)))


class _Builder:
    """What a part's `ref_rules` calls to add its rules, in the authors' state-dict order."""

    def __init__(self, cfg: ModelConfig, our_shapes: dict[str, Shape]):
        self.cfg, self.shapes, self.rules = cfg, our_shapes, []

    def same(self, ours: str, ref: str, ref_shape: Shape | None = None) -> None:
        our_shape = self.shapes[ours]
        self.rules.append(_same(ours, ref, ref_shape or our_shape, our_shape))

    def layer_norm(self, ours: str, ref: str) -> None:
        self.same(f"{ours}.weight", f"{ref}.weight")
        self.same(f"{ours}.bias", f"{ref}.bias")

    def norm(self, ours: str, ref: str) -> None:
        """A LayerNorm (weight, bias) or an RMSNorm (weight only)."""
        self.same(f"{ours}.weight", f"{ref}.weight")
        if f"{ours}.bias" in self.shapes:
            self.same(f"{ours}.bias", f"{ref}.bias")

    def stacked(self, ours: str, refs: tuple[str, ...], ref_shape: Shape) -> None:
        self.rules.append(_stacked(ours, refs, ref_shape))

    def concatenated(self, ours: str, refs: tuple[str, ...], ref_shape: Shape) -> None:
        self.rules.append(_concatenated(ours, refs, ref_shape))

    def ddlerp(self, ours: str, ref: str, ref_slots: tuple[str, ...], our_slots: tuple[str, ...],
               b_first: bool) -> None:
        """A Finch ddlerp: mu_x, one mu per slot, LoRA A [C, n*r] and B [n, r, C]; the reference
        lists the slot amounts in its slot order, and Finch-C2 registers B before A."""
        c = self.cfg.n_embd
        perm = [ref_slots.index(s) for s in our_slots]
        n, rank = len(our_slots), self.shapes[f"{ours}.lora_b"][1]
        self.same(f"{ours}.mu_x", f"{ref}.time_maa_x", (1, 1, c))
        self.rules.append(_stacked(f"{ours}.mu", tuple(f"{ref}.time_maa_{s}" for s in ref_slots),
                                   (1, 1, c), perm))
        lora = [_permuted(f"{ours}.lora_a", f"{ref}.time_maa_w1", (c, n * rank), perm, 1, n),
                _permuted(f"{ours}.lora_b", f"{ref}.time_maa_w2", (n, rank, c), perm, 0, n)]
        self.rules.extend(reversed(lora) if b_first else lora)


# keys whose non-default values have no tensor or setting in the authors' checkpoints
UNREPRESENTABLE = (
    ("att_bias", False, "their q/k/v-like maps have no biases"),
    ("rk_rope_theta", None, "their recurrent mixers have no RoPE on r and k"),
    ("emb_norm", True, "their models always norm the embeddings (blocks.0.ln0)"),
    ("norm_eps", None, "their norms keep the fixed eps of model.norm"),
)


def refuse_unrepresentable(cfg: ModelConfig) -> None:
    """A model the reference layout cannot hold is refused, rather than silently dropping
    tensors or settings (a student distilled from a transformer, say)."""
    for key, plain, why in UNREPRESENTABLE:
        if getattr(cfg, key) != plain:
            raise ConvertError(f"model.{key}={getattr(cfg, key)!r}: the reference layout cannot "
                               f"represent it ({why}); only model.{key}={plain!r} converts")


def reference_rules(cfg: ModelConfig, model) -> list[Rule]:
    """Every tensor of `model` (built from `cfg`, on any device, meta too), in the authors'
    state-dict order."""
    refuse_unrepresentable(cfg)
    our_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    b = _Builder(cfg, our_shapes)
    b.same("emb.weight", "emb.weight")
    for i, block in enumerate(model.blocks):
        name = f"blocks.{i}"
        b.norm(f"{name}.ln1", f"{name}.ln1")
        b.norm(f"{name}.ln2", f"{name}.ln2")
        if i == 0:
            b.norm("ln0", f"{name}.ln0")
        block.att.ref_rules(b, f"{name}.att", f"{name}.att")
        block.ffn.ref_rules(b, f"{name}.ffn", f"{name}.ffn")
    b.norm("ln_out", "ln_out")
    b.same("head.weight", "head.weight")
    if cfg.n_gold:
        b.same("kv_compression.compress.weight", "w_kv_cache_a.weight")
        b.same("kv_compression.expand.weight", "w_kv_cache_b.weight")
    missing = set(our_shapes) - {r.ours for r in b.rules}
    if missing:
        raise AssertionError(f"no reference mapping for {sorted(missing)}")
    return b.rules
