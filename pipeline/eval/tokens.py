"""The text tokenizer an evaluation encodes with: the one the run was trained on.

The adapter needs only `encode(text) -> ids`, `decode(ids) -> text` and `eot_id`, which the data
tools' codec gives for every tokenizer kind (byte-level BPE and RWKV World alike).
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..inference.run_loading import LoadedModel, check_vocab, load_tokenizer


class TextTokenizer(Protocol):
    eot_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def open_tokenizer(loaded: LoadedModel, override: str | Path | None = None) -> TextTokenizer:
    """--tokenizer, else the export's or the run's data dir's tokenizer; its vocabulary must fit
    the model's."""
    tok = load_tokenizer(loaded, override)
    check_vocab(loaded.cfg.vocab_size, tok.vocab_size, Path(str(override or loaded.source)))
    return tok
