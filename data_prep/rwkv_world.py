"""The RWKV World vocabulary (rwkv_vocab_v20230424) that the paper's checkpoints were trained with.

It is a greedy longest match over byte strings, not a BPE, so it has no tokenizer.json. Encoding
goes through the `pyrwkv-tokenizer` package (a compiled trie), which also ships the vocabulary
file; nothing is downloaded at run time. The vocabulary's ids run to 65529; models use 65,536 rows.

Id 0 is the end-of-text separator. As in the reference's trie tokenizer (built with its default
`add_endoftext_token=True`), the byte string `<|endoftext|>` is one more entry of the greedy match
with id 0, and decoding id 0 gives that string back, so a document that spells it out still
round-trips exactly. The package does not know that entry, so texts containing the string take a
path that finds where the greedy match would meet it (see `_encode_with_separators`).
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
EOT_TEXT = "<|endoftext|>"


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
        if EOT_TEXT in text:
            return self._encode_with_separators(text)
        return list(self._tok.encode(text))

    def encode_documents(self, texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
        plain = [i for i, t in enumerate(texts) if EOT_TEXT not in t]
        out: list[np.ndarray | None] = [None] * len(texts)
        for i, ids in zip(plain, self._tok.encode_batch([texts[i] for i in plain]) if plain else []):
            out[i] = np.asarray(ids, dtype=dtype)
        for i, text in enumerate(texts):
            if out[i] is None:
                out[i] = np.asarray(self._encode_with_separators(text), dtype=dtype)
        return out

    def _encode_with_separators(self, text: str) -> list[int]:
        """Greedy longest match over the vocabulary plus `<|endoftext|>` -> 0.

        The match is memoryless: a token starting at byte j depends only on bytes j .. j+longest,
        and no vocabulary entry starts with the separator's string. So the package's ids are right
        up to each occurrence of the string; at an occurrence that begins a token the separator
        wins; one covered by a token that began earlier stays text. Each window is encoded once,
        so the work stays linear in the text."""
        data, marker = text.encode("utf-8"), EOT_TEXT.encode("utf-8")
        table, longest = _byte_table(), _longest()
        ids, start = [], 0
        while True:
            occ = data.find(marker, start)
            if occ < 0:
                if start < len(data):
                    ids += self._tok.encode(data[start:].decode("utf-8"))
                return ids
            end = min(len(data), occ + longest)
            while end < len(data) and (data[end] & 0xC0) == 0x80:  # a character boundary
                end += 1
            pos = start
            for token in self._tok.encode(data[start:end].decode("utf-8")):
                if pos == occ:
                    break
                ids.append(token)
                pos += len(table[token])
                if pos > occ:  # this token covers the string's start: it stays text
                    break
            if pos == occ:
                ids.append(EOT_ID)
                pos += len(marker)
            start = pos

    def decode(self, ids) -> str:
        """Text of ids; a sequence cut inside a UTF-8 character shows U+FFFD there. (The package's
        own decode panics on such a cut, which sampling and streaming produce.)"""
        data = self.decode_bytes(ids)
        return data.decode("utf-8", "replace")

    def decode_bytes(self, ids) -> bytes:
        """Bytes of ids; id 0 gives `<|endoftext|>`, as the reference decodes it."""
        table = _byte_table()
        return b"".join(table[int(i)] for i in ids)

    def file_bytes(self) -> bytes:
        return vocab_bytes()


@lru_cache(maxsize=1)
def _byte_table() -> list[bytes]:
    """id -> its byte string, parsed from the vocabulary file, and 0 -> `<|endoftext|>`.

    Each line is `<id> <python literal of str or bytes> <byte length>`; the literal is parsed
    with ast.literal_eval (no code runs) and its length checked against the stated one."""
    import ast

    table = [b""] * VOCAB_SIZE
    table[EOT_ID] = EOT_TEXT.encode("utf-8")
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


@lru_cache(maxsize=1)
def _longest() -> int:
    return max(len(b) for b in _byte_table())
