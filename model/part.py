"""What every registered part (time mixer, channel mixer) owns besides its parameters.

A part initialises itself as its authors' code does (`reset_parameters`), names its tensors in
their checkpoints (`ref_rules`, the converter's slot map) and, for time mixers, says how to tell
it apart in a state dict (`signature`, `ref_signature`) and what sizes a state dict implies
(`infer_fields`). The blocks, the initialiser and the converter ask the part; none of them
knows the kinds. Parts are built from the ModelConfig (`cfg`) but never import it: the config
imports the registry to validate against it.
"""
from __future__ import annotations

from torch import nn


class Part(nn.Module):
    def reset_parameters(self, layer: int, n_layer: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no initialisation")

    def ref_rules(self, b, ours: str, ref: str) -> None:
        """Map our tensors under `ours` to the authors' under `ref`. By default the names and
        shapes are theirs already (RWKV-LM's x070 and x052 parts)."""
        for name in self.state_dict():
            b.same(f"{ours}.{name}", f"{ref}.{name}")


class TimeMixer(Part):
    """A sequence mixer: `forward(x, state, ctx) -> (out, its part of the new BlockState)`."""

    title = ""                  # what users call it, for messages
    family = "recurrent"        # recurrent | gold | attention
    default_cmix = "x060"       # the channel mix that goes with it when model.cmix is unset
    signature: tuple[str, ...] = ()  # our parameter names under `blocks.N.` only it has all of
    ref_signature = ""          # one of the authors' key names under `att.` that only it has

    @classmethod
    def infer_fields(cls, sd: dict, att: str) -> dict:
        """ModelConfig fields read off a state dict whose first block's time mix is at `att`."""
        return {}


class ChannelMixer(Part):
    """`forward(x, prev) -> out`; `prev` is the last input of the piece before (token shift)."""

    uses_shift = True
    ref_signature = ""  # one of the authors' key names under `ffn.` that only it has
    width_key = "key.weight"  # the authors' matrix whose rows are the hidden width

    @staticmethod
    def default_width(n_embd: int) -> int:
        raise NotImplementedError
