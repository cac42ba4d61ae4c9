"""The tokenizer of a data dir as one small object, whatever its kind, for everyone who needs it:
the data_prep tasks that encode, the trainer (vocab size, end-of-text id, digest), evaluate,
generate, compare, lm-eval.

Kinds: `bpe`, a Hugging Face byte-level BPE kept as `tokenizer.json`; `rwkv-world`, the RWKV World
vocabulary kept as `rwkv_vocab_v20230424.txt`. A data dir (or an export) holds the file its ids
were made with, and `manifest.json` records its kind, vocab size, end-of-text id and sha256; the
digest is what resume and init_from compare.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import rwkv_world
from . import tokenizer as bpe
from .errors import UserError
from .shard_format import MANIFEST, read_manifest

BPE = "bpe"
KINDS = (BPE, rwkv_world.NAME)
FILES = {BPE: "tokenizer.json", rwkv_world.NAME: rwkv_world.VOCAB_FILE}


class Codec(Protocol):
    kind: str
    file: str  # its file's name inside a data dir or export
    sha256: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...
    def encode_documents(self, texts: list[str], dtype: np.dtype) -> list[np.ndarray]: ...
    def decode(self, ids) -> str: ...
    def file_bytes(self) -> bytes: ...


class BpeCodec:
    """A tokenizer.json; the end-of-text string inside a text is encoded as plain text."""

    kind, file = BPE, FILES[BPE]

    def __init__(self, json_text: str, where: str = "tokenizer.json"):
        self.vocab_size = bpe.check_tokenizer_json(json_text, where)
        self.text = json_text
        self._tok = bpe.load(json_text)
        self.eot_id = self._tok.token_to_id(bpe.EOT)
        self.sha256 = bpe.sha256_hex(json_text.encode("utf-8"))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_documents(self, texts: list[str], dtype: np.dtype) -> list[np.ndarray]:
        return bpe.encode_documents(self._tok, texts, dtype)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def file_bytes(self) -> bytes:
        return self.text.encode("utf-8")


@dataclass(frozen=True)
class CodecSpec:
    """What a Ray task needs to rebuild the codec: small, picklable, content-addressed."""
    kind: str
    json_text: str = ""  # bpe only


_built: dict[CodecSpec, Codec] = {}


def from_spec(spec: CodecSpec) -> Codec:
    """The codec of a spec, built once per process (tasks reuse it)."""
    codec = _built.get(spec)
    if codec is None:
        codec = rwkv_world.RwkvWorldCodec() if spec.kind == rwkv_world.NAME else BpeCodec(spec.json_text)
        _built[spec] = codec
    return codec


def spec_of(codec: Codec) -> CodecSpec:
    return CodecSpec(codec.kind, getattr(codec, "text", ""))


def token_dtype(codec: Codec) -> np.dtype:
    return bpe.token_dtype(codec.vocab_size)


def describe(codec: Codec) -> dict:
    """What manifest.json records about the tokenizer."""
    info = {"kind": codec.kind, "file": codec.file, "sha256": codec.sha256,
            "vocab_size": codec.vocab_size, "eot_id": codec.eot_id, "dtype": token_dtype(codec).name}
    if codec.kind == BPE:
        info["model"] = json.loads(codec.text).get("model", {}).get("type")
    return info


def load_codec(directory) -> Codec:
    """The codec a data dir or export dir (local path or fsspec URL) was made with, checked
    against the digest its manifest records."""
    from .storage import Store

    store = Store(str(directory))
    info = (read_manifest(store) or {}).get("tokenizer", {})
    kind = info.get("kind")
    if kind is None:  # an export, or a data dir from before kinds were recorded
        kind = rwkv_world.NAME if store.size(rwkv_world.VOCAB_FILE) is not None else BPE
    if kind not in KINDS:
        raise UserError(f"{store.url(MANIFEST)}: unknown tokenizer kind {kind!r} "
                        f"(known: {', '.join(KINDS)})")
    path = store.url(FILES[kind])
    data = store.read_bytes(FILES[kind])
    if data is None:
        raise UserError(f"{path}: missing (the {kind} tokenizer this dir's ids were made with)")
    digest = hashlib.sha256(data).hexdigest()
    if info.get("sha256") not in (None, digest):
        raise UserError(f"{path}: sha256 {digest[:16]}... is not the {info['sha256'][:16]}... its "
                        f"manifest records (replaced after the data was built?)")
    if kind == BPE:
        return BpeCodec(data.decode("utf-8", "replace"), path)
    codec = rwkv_world.RwkvWorldCodec()
    if codec.sha256 != digest:
        raise UserError(f"{path} is not the RWKV World vocabulary the installed pyrwkv-tokenizer "
                        f"encodes with (sha256 {digest[:16]}... vs {codec.sha256[:16]}...)")
    return codec


def resolve(name: str, where: str = "data.tokenizer") -> Codec:
    """`data.tokenizer`: `rwkv-world` or the path of a tokenizer.json."""
    if name == rwkv_world.NAME:
        return rwkv_world.RwkvWorldCodec()
    from .storage import Store

    folder, _, file = name.rpartition("/")
    data = Store(folder or ".").read_bytes(file)
    if data is None:
        raise UserError(f"{where}={name!r}: no such file (a tokenizer.json, or {rwkv_world.NAME})")
    return BpeCodec(data.decode("utf-8", "replace"), name)
