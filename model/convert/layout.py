"""How the reference implementation's parameters map onto ours, tensor by tensor.

The reference (recursal/GoldFinch-paper) keeps every token-shift amount as its own [1, 1, C]
tensor, orders the five Finch ddlerp slots w, k, v, r, g (Finch-C2: r, k, v, w, v2), keeps q, k and
v of its Llama separate, holds LN0 in block 0 and names the key compression at model level. Each
`Rule` below turns one of our tensors into the reference's tensors and back, losslessly: only
reshapes, concatenations and slot permutations, never arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import ModelConfig
from ..mixers import time_mixer

Shape = tuple[int, ...]

# slot order of the reference's ddlerp LoRA (the order it unbinds the amounts in); ours is each
# registered mixer's `slots`
REF_SLOTS = {"finch": ("w", "k", "v", "r", "g"), "finch_c2": ("r", "k", "v", "w", "v2")}


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
    def __init__(self, cfg: ModelConfig, our_shapes: dict[str, Shape]):
        self.cfg, self.shapes, self.rules = cfg, our_shapes, []

    def same(self, ours: str, ref: str, ref_shape: Shape | None = None) -> None:
        our_shape = self.shapes[ours]
        self.rules.append(_same(ours, ref, ref_shape or our_shape, our_shape))

    def layer_norm(self, ours: str, ref: str) -> None:
        self.same(f"{ours}.weight", f"{ref}.weight")
        self.same(f"{ours}.bias", f"{ref}.bias")

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


def _finch_att(b: _Builder, ours: str, ref: str, mixer: str) -> None:
    a = b.cfg.att_width
    b.ddlerp(f"{ours}.mix", ref, REF_SLOTS[mixer], time_mixer(mixer).slots, b_first=mixer == "finch_c2")
    b.same(f"{ours}.decay_base", f"{ref}.time_decay", (1, 1, a))
    b.same(f"{ours}.decay_lora.a", f"{ref}.time_decay_w1")
    b.same(f"{ours}.decay_lora.b", f"{ref}.time_decay_w2")
    if mixer == "finch_c2":
        b.same(f"{ours}.v2_lora.a", f"{ref}.time_value2_w1")
        b.same(f"{ours}.v2_lora.b", f"{ref}.time_value2_w2")
        b.same(f"{ours}.unused_bonus", f"{ref}.time_faaaa")
    else:
        b.same(f"{ours}.bonus", f"{ref}.time_faaaa")
    for lin in ("receptance", "key", "value") + (("gate",) if mixer == "finch" else ()) + ("output",):
        b.same(f"{ours}.{lin}.weight", f"{ref}.{lin}.weight")
    b.layer_norm(f"{ours}.ln_x", f"{ref}.ln_x")


def _gold_att(b: _Builder, ours: str, ref: str) -> None:
    c = b.cfg.n_embd
    b.same(f"{ours}.q_mix.mu_x", f"{ref}.time_maa_x", (1, 1, c))
    b.same(f"{ours}.q_mix.mu", f"{ref}.time_maa_q", (1, 1, c))
    b.same(f"{ours}.kv_mix.mu_x", f"{ref}.time_maa_v_cache", (1, 1, c))
    b.rules.append(_stacked(f"{ours}.kv_mix.mu", (f"{ref}.time_maa_k", f"{ref}.time_maa_v"),
                            (1, 1, c)))
    rank = b.shapes[f"{ours}.q_mix.lora_b"][1]
    b.same(f"{ours}.q_mix.lora_a", f"{ref}.time_maa_q_w1")
    b.same(f"{ours}.q_mix.lora_b", f"{ref}.time_maa_q_w2", (rank, c))
    b.same(f"{ours}.kv_mix.lora_a", f"{ref}.time_maa_kv_w1")
    b.same(f"{ours}.kv_mix.lora_b", f"{ref}.time_maa_kv_w2")
    for lora, name in (("k_lora", "time_key"), ("v_lora", "time_value")):
        b.same(f"{ours}.{lora}.a", f"{ref}.{name}_w1")
        b.same(f"{ours}.{lora}.b", f"{ref}.{name}_w2")
    b.same(f"{ours}.query.weight", f"{ref}.query.weight")
    b.same(f"{ours}.output.weight", f"{ref}.output.weight")
    for ln in ("ln_q", "ln_k", "ln_v", "ln_x"):
        b.layer_norm(f"{ours}.{ln}", f"{ref}.{ln}")


def _channel_mix(b: _Builder, ours: str, ref: str) -> None:
    c = b.cfg.n_embd
    b.same(f"{ours}.mu_k", f"{ref}.time_maa_k", (1, 1, c))
    b.same(f"{ours}.mu_r", f"{ref}.time_maa_r", (1, 1, c))
    for lin in ("key", "receptance", "value"):
        b.same(f"{ours}.{lin}.weight", f"{ref}.{lin}.weight")


def _llama_block(b: _Builder, ours: str, ref: str) -> None:
    a, c = b.cfg.att_width, b.cfg.n_embd
    b.rules.append(_concatenated(f"{ours}.att.qkv.weight",
                                 tuple(f"{ref}.att.w{x}.weight" for x in "qkv"), (a, c)))
    b.same(f"{ours}.att.output.weight", f"{ref}.att.wo.weight")
    for ours_lin, ref_lin in (("gate", "w1"), ("down", "w2"), ("up", "w3")):
        b.same(f"{ours}.ffn.{ours_lin}.weight", f"{ref}.ffn.{ref_lin}.weight")


def reference_rules(cfg: ModelConfig, our_shapes: dict[str, Shape]) -> list[Rule]:
    """Every tensor of a model with config `cfg`, in the reference's state-dict order."""
    b = _Builder(cfg, our_shapes)
    b.same("emb.weight", "emb.weight")
    for i in range(cfg.n_layer):
        ours = ref = f"blocks.{i}"
        b.layer_norm(f"{ours}.ln1", f"{ref}.ln1")
        b.layer_norm(f"{ours}.ln2", f"{ref}.ln2")
        if i == 0:
            b.layer_norm("ln0", f"{ref}.ln0")
        if cfg.arch == "llama":
            _llama_block(b, ours, ref)
            continue
        if i < cfg.n_finch:
            _finch_att(b, f"{ours}.att", f"{ref}.att", cfg.lower_mixer)
        else:
            _gold_att(b, f"{ours}.att", f"{ref}.att")
        _channel_mix(b, f"{ours}.ffn", f"{ref}.ffn")
    b.layer_norm("ln_out", "ln_out")
    b.same("head.weight", "head.weight")
    if cfg.n_gold:
        b.same("kv_compression.compress.weight", "w_kv_cache_a.weight")
        b.same("kv_compression.expand.weight", "w_kv_cache_b.weight")
    missing = set(our_shapes) - {r.ours for r in b.rules}
    if missing:
        raise AssertionError(f"no reference mapping for {sorted(missing)}")
    return b.rules
