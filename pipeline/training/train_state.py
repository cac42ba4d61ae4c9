"""The trainer's counters as one object, saved in and restored from every checkpoint.

The data position and the RNG are per rank and live in the rank files (checkpointing); this is
what every rank shares. Tokens are counted, not derived from steps: the global batch may change
with the number of ranks between a run's invocations (elastic resume with a fixed grad_accum).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

CLIENT_KEY = "train_state"  # the entry of DeepSpeed's client state that holds it


@dataclass
class TrainState:
    step: int = 0  # optimizer steps completed
    tokens: int = 0  # tokens trained on, over all ranks
    skipped_steps: int = 0  # steps whose update a non-finite loss or gradient skipped
    phase: int = 0  # the freeze phase the last step trained in

    def advance(self, tokens: int, applied: bool) -> None:
        """Count one optimizer step over `tokens`; `applied`: its update reached the weights."""
        self.step += 1
        self.tokens += tokens
        self.skipped_steps += not applied

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore from what `state_dict` returned, or from an older checkpoint's flat counter
        dict (no skipped_steps before they were counted; its phase is the one it was saved in)."""
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.phase = int(state.get("phase", self.phase))

    def client_state(self) -> dict:
        """What DeepSpeed's save_checkpoint stores beside the engine's own state."""
        return {CLIENT_KEY: self.state_dict()}

    @classmethod
    def from_client_state(cls, client: dict, phase: int) -> "TrainState":
        """The state a loaded checkpoint holds; `phase`: the one the engine was built for, taken
        when the checkpoint predates the recorded phase."""
        state = cls(phase=phase)
        state.load_state_dict(client.get(CLIENT_KEY, client))
        return state
