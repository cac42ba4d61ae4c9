"""data.tokenizer=rwkv-world: ids exactly those of a greedy longest match over the vocabulary's
byte strings (the reference's trie tokenizer), computed here by a slow matcher of the test's own
that reads the vocabulary file itself; decoding gives the text back; data dirs record the kind."""
from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from data_prep import job
from data_prep.config import load_config
from data_prep.errors import UserError
from data_prep.rwkv_world import VOCAB_FILE, vocab_path
from data_prep.text_codec import load_codec, resolve
from data_prep_helpers import TRICKY, read_samples


@lru_cache(maxsize=1)
def vocabulary() -> tuple[dict[bytes, int], int]:
    """byte string -> id, straight from the file's lines `<id> <literal> <length>`, plus the
    separator's string as id 0 (the reference's trie tokenizer adds it by default)."""
    table = {}
    for line in vocab_path().read_text(encoding="utf-8").splitlines():
        first, rest = line.index(" "), line.rindex(" ")
        value = ast.literal_eval(line[first + 1:rest])
        value = value if isinstance(value, bytes) else value.encode("utf-8")
        assert len(value) == int(line[rest + 1:])
        table[value] = int(line[:first])
    table[b"<|endoftext|>"] = 0
    return table, max(len(v) for v in table)


def greedy_ids(text: str) -> list[int]:
    table, longest = vocabulary()
    data, ids, i = text.encode("utf-8"), [], 0
    while i < len(data):
        for n in range(min(longest, len(data) - i), 0, -1):
            if data[i:i + n] in table:
                ids.append(table[data[i:i + n]])
                i += n
                break
        else:
            raise AssertionError(f"byte {data[i]} has no token")
    return ids


def every_byte_text() -> str:
    """Characters whose UTF-8 encodings use every byte value that valid UTF-8 can hold: all of
    ASCII (controls and NUL included), every 2-byte lead and continuation, every 3- and 4-byte
    lead (surrogates excluded)."""
    chars = [chr(c) for c in range(0x80)] + [chr(c) for c in range(0x80, 0x800)]
    chars += [chr(c) for c in range(0x800, 0x10000, 0x1000) if not 0xD800 <= c < 0xE000] + ["\ud7ff"]
    chars += [chr(c) for c in (0x10000, 0x40000, 0x80000, 0xC0000, 0x100000, 0x10FFFF)]
    text = "".join(chars)
    assert {b for b in text.encode("utf-8")} == set(range(0x00, 0xC0)) | set(range(0xC2, 0xF5))
    return text


TEXTS = TRICKY + [
    "漢字とかなの混じった文。中文句子，还有标点！한국어 문장도.",
    "emoji 👩‍👩‍👧‍👦 🇺🇳 🎉🎉🎉 👍🏽",
    "combining: e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0352\u0353",
    " " * 37 + "\n" * 9 + "\t \t" * 5 + "\r\n\r\n" + "\u3000" * 4 + "end",
    every_byte_text(),
    "<|endoftext|>x<|endoftext|><|endoftext|>y <|endoftext|>.<|endoftext|>\n<|endoftext|> <<|endoftext|>|>",
    "a" * 300 + "<|endoftext|>" + "🎉" * 50 + " <|endoftext|>" + "<|endo" + "\u00e9<|endoftext|>",
]


@pytest.mark.parametrize("text", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_ids_are_the_greedy_longest_match_and_decode_back(text):
    codec = resolve("rwkv-world")
    ids = codec.encode(text)
    assert ids == greedy_ids(text)
    assert codec.decode(ids) == text
    (batched,) = codec.encode_documents([text], np.dtype(np.uint16))
    assert batched.tolist() == ids


def test_decode_of_a_cut_character_does_not_fail():
    codec = resolve("rwkv-world")
    ids = codec.encode("🎉")
    assert len(ids) > 1
    assert codec.decode(ids[:1]) == "\ufffd"


def test_data_dir_holds_the_reference_ids_and_records_the_tokenizer(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    # a NUL byte marks a text file as binary, so it is left out of the files here
    texts = {f"doc{i:02d}.txt": t.replace("\0", "") for i, t in enumerate(TEXTS) if t.strip("\n")}
    for name, text in texts.items():
        (src / name).write_bytes(text.encode("utf-8"))
    out = tmp_path / "out"
    cfg = load_config(overrides=[f"data.input={src}", f"data.output={out}", "data.tokenizer=rwkv-world",
                                 "data.executor=local", "data.val_fraction=0"])
    manifest = job.run(cfg, progress=False)
    info = manifest["tokenizer"]
    assert (info["kind"], info["vocab_size"], info["eot_id"], info["dtype"]) == ("rwkv-world", 65536, 0, "uint16")
    assert (out / VOCAB_FILE).read_bytes() == vocab_path().read_bytes()
    assert not (out / "tokenizer.json").exists()
    samples = read_samples(out)
    assert len(samples) == len(texts)
    for sample in samples:
        text = texts[Path(sample["meta"]["source"]).name]
        assert sample["tokens"].tolist() == greedy_ids(text)
    codec = load_codec(out)
    assert (codec.kind, codec.sha256) == ("rwkv-world", info["sha256"])
    assert codec.decode(samples[0]["tokens"]) == texts[Path(samples[0]["meta"]["source"]).name]

    # the same command elsewhere gives the same bytes; another tokenizer for this dir is refused
    again = tmp_path / "again"
    job.run(load_config(overrides=[f"data.input={src}", f"data.output={again}", "data.tokenizer=rwkv-world",
                                   "data.executor=local", "data.val_fraction=0"]), progress=False)
    assert {p.name: p.read_bytes() for p in again.glob("*.tar")} == \
        {p.name: p.read_bytes() for p in out.glob("*.tar")}
    other = tmp_path / "tok.json"
    from data_prep.tokenizer import train_tokenizer

    other.write_text(train_tokenizer(["some text to train on"] * 4, 300))
    with pytest.raises(UserError, match="differs from the tokenizer"):
        job.run(load_config(overrides=[f"data.input={src}", f"data.output={out}", f"data.tokenizer={other}",
                                       "data.executor=local", "data.val_fraction=0"]), progress=False)


def test_a_replaced_vocabulary_file_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer": {"kind": "rwkv-world", "sha256": "0" * 64}}))
    (tmp_path / VOCAB_FILE).write_bytes(vocab_path().read_bytes())
    with pytest.raises(UserError, match="manifest records"):
        load_codec(tmp_path)
    (tmp_path / "manifest.json").unlink()
    (tmp_path / VOCAB_FILE).write_bytes(vocab_path().read_bytes()[:-10])
    with pytest.raises(UserError, match="not the RWKV World vocabulary"):
        load_codec(tmp_path)
