"""Small corpora and readers for the data_prep tests."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np

TRICKY = [
    "def f(x):\n    return x  \n\n\n",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600 emoji\r\nwindows line\r\n",
    "the literal <|endoftext|> inside a document stays text",
    "   leading spaces and trailing   ",
    "\t\ttabs\tand\u00a0nbsp\u2028line sep\n",
    "x" * 3000,
    "\n",
]


def make_text(rng: random.Random, words: int) -> str:
    vocab = ["alpha", "beta", "gamma", "if", "else", "return", "(", ")", ":", "0x1F", "42",
             "\u00fcber", "\u03bb", "    ", "\n", "\n\n", "  ", "#", "'s", "don't"]
    return " ".join(rng.choice(vocab) for _ in range(words))


def make_text_corpus(root: Path, n: int = 24, seed: int = 0) -> dict[str, str]:
    """A directory tree of text files (one document each); returns {path: text}."""
    rng = random.Random(seed)
    docs = {}
    for i in range(n):
        sub = root / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        text = TRICKY[i] if i < len(TRICKY) else make_text(rng, rng.randint(5, 400))
        path = sub / f"doc{i:03d}.txt"
        path.write_bytes(text.encode("utf-8"))
        docs[str(path)] = text
    return docs


def write_jsonl(path: Path, records: list, gz: bool = False) -> None:
    lines = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)
    path.write_bytes(gzip.compress(lines, mtime=0) if gz else lines)


def read_samples(data_dir: Path) -> list[dict]:
    """Every sample of every shard in manifest order: name, split, key, tokens, meta."""
    import webdataset as wds

    manifest = json.loads((data_dir / "manifest.json").read_text())
    out = []
    for entry in manifest["shards"]:
        reader = wds.WebDataset(str(data_dir / entry["name"]), shardshuffle=False, empty_check=False,
                                nodesplitter=None, workersplitter=None)
        for sample in reader:
            out.append({"shard": entry["name"], "split": entry["name"].split("-", 1)[0],
                        "key": sample["__key__"], "tokens": np.load(io.BytesIO(sample["tokens.npy"])),
                        "meta": json.loads(sample["json"])})
    return out


def decoder(data_dir: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(data_dir / "tokenizer.json"))
    return lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=False)


def tree_bytes(data_dir: Path) -> dict[str, str]:
    """sha256 of every visible file (the data dir's public content)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}


def write_binidx(prefix: Path, documents: list[list[list[int]]], dtype=np.uint16) -> None:
    """A Megatron/RWKV-LM binidx pair written from the format's definition: each document is a
    list of sequences of ids. `.idx`: magic, version 1, dtype code, sequence count, document-index
    count, int32 sizes, int64 byte pointers, int64 document starts (sequence numbers, 0..n)."""
    import struct

    code = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.uint8): 1}
    itemsize = np.dtype(dtype).itemsize
    sizes, pointers, doc_idx, data, offset = [], [], [0], [], 0
    for doc in documents:
        for seq in doc:
            sizes.append(len(seq))
            pointers.append(offset)
            offset += len(seq) * itemsize
            data.append(np.asarray(seq, dtype=dtype).tobytes())
        doc_idx.append(len(sizes))
    head = struct.pack("<9sQBQQ", b"MMIDIDX\x00\x00", 1, code[np.dtype(dtype)], len(sizes), len(doc_idx))
    Path(f"{prefix}.idx").write_bytes(head + np.asarray(sizes, "<i4").tobytes()
                                      + np.asarray(pointers, "<i8").tobytes() + np.asarray(doc_idx, "<i8").tobytes())
    Path(f"{prefix}.bin").write_bytes(b"".join(data))
