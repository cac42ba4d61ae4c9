"""The binidx reader against files this test writes itself from the format's definition (Megatron's
MMapIndexedDataset, version 1), and its refusals of pairs that do not fit together."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from data_prep.binidx import BinIdx, prefix_of
from data_prep.errors import UserError

CODES = {np.dtype(np.uint8): 1, np.dtype(np.int16): 3, np.dtype(np.int32): 4, np.dtype(np.int64): 5,
         np.dtype(np.uint16): 8}


def write_pair(prefix: Path, documents: list[list[list[int]]], dtype=np.uint16, *, version: int = 1,
               code: int | None = None, pointer_shift: int = 0) -> None:
    """documents: each a list of sequences (token lists). Writes prefix.bin and prefix.idx."""
    dtype = np.dtype(dtype)
    sizes, pointers, doc_idx, blob, offset = [], [], [0], bytearray(), 0
    for doc in documents:
        for seq in doc:
            arr = np.asarray(seq, dtype=dtype.newbyteorder("<"))
            sizes.append(arr.size)
            pointers.append(offset)
            blob += arr.tobytes()
            offset += arr.nbytes
        doc_idx.append(len(sizes))
    if pointer_shift and len(pointers) > 1:
        pointers[1] += pointer_shift
    Path(f"{prefix}.bin").write_bytes(bytes(blob))
    head = b"MMIDIDX\x00\x00" + struct.pack("<Q", version) + struct.pack("<B", code or CODES[dtype])
    head += struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(doc_idx))
    body = np.asarray(sizes, "<i4").tobytes() + np.asarray(pointers, "<i8").tobytes()
    Path(f"{prefix}.idx").write_bytes(head + body + np.asarray(doc_idx, "<i8").tobytes())


def corpus(rng: np.random.Generator, n: int, high: int) -> list[list[list[int]]]:
    """n documents of 1-3 sequences each (some empty), ids below high."""
    return [[rng.integers(0, high, rng.integers(0, 40)).tolist() for _ in range(rng.integers(1, 4))]
            for _ in range(n)]


@pytest.mark.parametrize("dtype,high", [(np.uint16, 65536), (np.int32, 1 << 20), (np.uint8, 256)])
def test_documents_read_back_exactly(tmp_path, dtype, high, monkeypatch):
    import data_prep.binidx as binidx

    monkeypatch.setattr(binidx, "CHUNK", 7)  # several index chunks, documents spanning their edges
    docs = corpus(np.random.default_rng(1), 50, high)
    write_pair(tmp_path / "c", docs, dtype)
    b = BinIdx(str(tmp_path / "c"))
    assert b.documents == 50 and b.dtype == np.dtype(dtype)
    assert b.tokens() == sum(len(s) for d in docs for s in d)
    got = list(b.read())
    assert [n for n, _ in got] == list(range(50))
    for (_, ids), doc in zip(got, docs):
        assert ids.tolist() == [t for seq in doc for t in seq]
    assert [ids.tolist() for _, ids in b.read(13, 31)] == [ids.tolist() for _, ids in got[13:31]]


def test_prefix_of_names():
    assert prefix_of("s3://b/minipile.bin") == "s3://b/minipile"
    assert prefix_of("/d/minipile.idx") == "/d/minipile"
    assert prefix_of("/d/corpus.jsonl") is None


def test_empty_corpus(tmp_path):
    write_pair(tmp_path / "e", [])
    assert list(BinIdx(str(tmp_path / "e")).read()) == []


def refuse(prefix: Path, match: str, read: bool = False) -> None:
    with pytest.raises(UserError, match=match):
        b = BinIdx(str(prefix))
        if read:
            list(b.read())


def test_broken_pairs_are_refused(tmp_path):
    docs = corpus(np.random.default_rng(2), 20, 60000)
    good = tmp_path / "good"
    write_pair(good, docs)

    cut = tmp_path / "cut"
    write_pair(cut, docs)
    Path(f"{cut}.bin").write_bytes(Path(f"{cut}.bin").read_bytes()[:-2])
    refuse(cut, r"cut\.bin: .* does not match")

    short_idx = tmp_path / "shortidx"
    write_pair(short_idx, docs)
    Path(f"{short_idx}.idx").write_bytes(Path(f"{short_idx}.idx").read_bytes()[:-8])
    refuse(short_idx, r"shortidx\.idx: .*truncated")

    other_dtype = tmp_path / "otherdtype"  # an int32 index over a uint16 .bin: sizes disagree
    write_pair(other_dtype, docs)
    raw = bytearray(Path(f"{other_dtype}.idx").read_bytes())
    raw[17] = 4
    Path(f"{other_dtype}.idx").write_bytes(bytes(raw))
    refuse(other_dtype, "does not match")

    refuse(tmp_path / "missing", "no such file")
    Path(f"{tmp_path}/onlybin.bin").write_bytes(b"\0\0")
    refuse(tmp_path / "onlybin", r"onlybin\.idx: no such file")

    for name, kwargs, match in [("magic", {}, "no MMIDIDX header"), ("v2", {"version": 2}, "version 2"),
                                ("float", {"code": 6}, "dtype code 6")]:
        write_pair(tmp_path / name, docs, **kwargs)
        if name == "magic":
            raw = Path(f"{tmp_path / name}.idx").read_bytes()
            Path(f"{tmp_path / name}.idx").write_bytes(b"NOTMAGIC!" + raw[9:])
        refuse(tmp_path / name, match)

    shifted = tmp_path / "shifted"  # sizes of the whole file fit, but one pointer is off
    write_pair(shifted, docs, pointer_shift=2)
    refuse(shifted, "pointers and sizes disagree", read=True)


def test_document_index_must_span_the_sequences(tmp_path):
    docs = corpus(np.random.default_rng(3), 5, 100)
    write_pair(tmp_path / "d", docs)
    raw = bytearray(Path(f"{tmp_path}/d.idx").read_bytes())
    raw[-8:] = struct.pack("<q", 1)  # last doc_idx entry no longer the sequence count
    Path(f"{tmp_path}/d.idx").write_bytes(bytes(raw))
    refuse(tmp_path / "d", "document index runs")
