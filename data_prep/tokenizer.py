"""The byte-level BPE tokenizer: trained here on a sample, or an existing tokenizer.json.

Every byte is in the initial alphabet and the decoder is ByteLevel, so decoding a document's ids
gives its text back exactly. `<|endoftext|>` is a special token for the trainer's separators, but
the same characters inside a document are encoded as plain text (`encode_special_tokens`), so a
document can never smuggle in a separator and still round-trips.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable, Iterator

import numpy as np

from .errors import UserError

EOT = "<|endoftext|>"
# documents longer than this are encoded in pieces cut where the byte-level pre-tokenizer would
# cut anyway (see safe_pieces), so memory stays bounded and the ids are the same as in one piece
PIECE_CHARS = 1 << 20
BATCH_CHARS = 4 << 20  # characters handed to one encode_batch call

_cache: dict[str, object] = {}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> str:
    """A byte-level BPE trained on texts; returns its tokenizer.json text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((piece for text in texts for piece in safe_pieces(text)), trainer)
    return tok.to_str()


def check_tokenizer_json(text: str, where: str) -> int:
    """Vocab size of a tokenizer.json that has the end-of-text token; UserError otherwise."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(text)
    except Exception as err:
        raise UserError(f"{where} is not a tokenizers tokenizer.json ({str(err).splitlines()[0]})") from None
    if tok.token_to_id(EOT) is None:
        raise UserError(f"{where} has no {EOT} token (the trainer separates documents with it)")
    return tok.get_vocab_size()


def load(text: str):
    """A Tokenizer from json text, cached per process by content (tasks reuse it)."""
    from tokenizers import Tokenizer

    key = sha256_hex(text.encode("utf-8"))
    tok = _cache.get(key)
    if tok is None:
        tok = Tokenizer.from_str(text)
        tok.encode_special_tokens = True
        _cache[key] = tok
    return tok


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# "X Y" or "X\nY" with X, Y not whitespace: the space (or newline) starts a pre-token both in the
# whole text and in a piece that starts there, and X ends one, so no pre-token spans the cut
_CUT = re.compile(r"(?<=\S)[ \n](?=\S)")


def safe_pieces(text: str, size: int | None = None) -> Iterator[str]:
    """text cut into pieces of about `size` characters at pre-token boundaries (one piece if none)."""
    size, start = size or PIECE_CHARS, 0
    while len(text) - start > size:
        found = _CUT.search(text, start + size)
        if found is None:
            break
        yield text[start:found.start()]
        start = found.start()
    yield text[start:]


def encode_documents(tok, texts: list[str], dtype: np.dtype, piece_chars: int | None = None,
                     batch_chars: int | None = None) -> list[np.ndarray]:
    """Token ids of each text (no end-of-text added), as 1-D arrays of dtype."""
    piece_chars, batch_chars = piece_chars or PIECE_CHARS, batch_chars or BATCH_CHARS
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    pieces: list[tuple[int, str]] = [(d, p) for d, t in enumerate(texts) for p in safe_pieces(t, piece_chars)]
    parts: list[list[np.ndarray]] = [[] for _ in texts]
    batch: list[tuple[int, str]] = []
    size = 0

    def flush():
        for (d, _), enc in zip(batch, encode([p for _, p in batch], add_special_tokens=False)):
            parts[d].append(np.asarray(enc.ids, dtype=dtype))

    for item in pieces:
        batch.append(item)
        size += len(item[1])
        if size >= batch_chars:
            flush()
            batch, size = [], 0
    if batch:
        flush()
    return [p[0] if len(p) == 1 else np.concatenate(p) if p else np.zeros(0, dtype) for p in parts]
