"""The RWKV World vocabulary (rwkv_vocab_v20230424) that the paper's checkpoints were trained with.

It is a greedy longest match over byte strings, not a BPE, so it has no tokenizer.json. Encoding
goes through the `pyrwkv-tokenizer` package (a compiled trie), which also ships the vocabulary
file; nothing is downloaded at run time. Id 0 is the end-of-text separator and never comes out of
encoding; the vocabulary's ids run to 65529, and models use 65,536 rows.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import UserError

NAME = "rwkv-world"
VOCAB_FILE = "rwkv_vocab_v20230424.txt"
VOCAB_SIZE = 65536
EOT_ID = 0


def _package():
    try:
        import pyrwkv_tokenizer
    except ImportError:
        raise UserError("data.tokenizer=rwkv-world needs the pyrwkv-tokenizer package "
                        "(pip install pyrwkv-tokenizer; `make setup` installs it)") from None
    return pyrwkv_tokenizer


def vocab_path() -> Path:
    """The vocabulary file that ships inside the package."""
    path = Path(_package().__file__).parent / VOCAB_FILE
    if not path.is_file():
        raise UserError(f"the installed pyrwkv-tokenizer has no {VOCAB_FILE}")
    return path


@lru_cache(maxsize=1)
def vocab_bytes() -> bytes:
    return vocab_path().read_bytes()


@lru_cache(maxsize=1)
def vocab_sha256() -> str:
    return hashlib.sha256(vocab_bytes()).hexdigest()


class RwkvWorldCodec:
    """Text <-> ids with the RWKV World vocabulary."""

    kind = NAME
    file = VOCAB_FILE
    vocab_size = VOCAB_SIZE
    eot_id = EOT_ID

    def __init__(self):
        self._tok = _package().RWKVTokenizer(vocab_filepath=str(vocab_path()))
        self.sha256 = vocab_sha256()

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text))

    def encode_documents(self, texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=dtype) for ids in self._tok.encode_batch(texts)] if texts else []

    def decode(self, ids) -> str:
        """Text of ids; a sequence cut inside a UTF-8 character shows U+FFFD there. (The package's
        own decode panics on such a cut, which sampling and streaming produce.)"""
        data = self.decode_bytes(ids)
        return data.decode("utf-8", "replace")

    def decode_bytes(self, ids) -> bytes:
        table = _byte_table()
        return b"".join(table[int(i)] for i in ids)

    def file_bytes(self) -> bytes:
        return vocab_bytes()


@lru_cache(maxsize=1)
def _byte_table() -> list[bytes]:
    """id -> its byte string, parsed from the vocabulary file (id 0, end-of-text, is empty).

    Each line is `<id> <python literal of str or bytes> <byte length>`; the literal is parsed
    with ast.literal_eval (no code runs) and its length checked against the stated one."""
    import ast

    table = [b""] * VOCAB_SIZE
    for n, line in enumerate(vocab_bytes().decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        idx, rest = line.split(" ", 1)
        literal, length = rest.rsplit(" ", 1)
        value = ast.literal_eval(literal)
        value = value.encode("utf-8") if isinstance(value, str) else value
        if len(value) != int(length):
            raise UserError(f"{VOCAB_FILE} line {n}: {len(value)} bytes, the file says {length}")
        table[int(idx)] = value
    return table
