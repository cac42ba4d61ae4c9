"""binidx input (the paper's minipile format): files written here from the format's definition
come out as the same documents with the same ids; damaged pairs are refused."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from data_prep.config import load_config
from data_prep.errors import UserError
from data_prep.job import run
from data_prep_helpers import read_samples, tree_bytes, write_binidx

EOT = 0  # RWKV World's end-of-text id, which RWKV-LM's make_data.py appends to every document


def cfg_for(tmp: Path, inp: str, out: str = "out", *extra: str):
    return load_config(None, [f"data.input={inp}", f"data.output={tmp / out}", "data.tokenizer=rwkv-world",
                              "data.executor=local", "data.shard_bytes=300", "data.unit_bytes=200",
                              "data.val_fraction=0.2", *extra])


def _documents(seed: int, n: int, high: int) -> list[list[list[int]]]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        seqs = [rng.integers(1, high, rng.integers(1, 30)).tolist() for _ in range(1 + i % 3)]
        if i % 4:
            seqs[-1] = seqs[-1] + [EOT]
        docs.append(seqs)
    docs[7] = [[EOT]]  # empty after the separator
    docs[11] = []  # no sequences at all
    return docs


@pytest.mark.parametrize("dtype, high", [(np.uint16, 65535), (np.int32, 65535)])
def test_binidx_documents_come_out_with_the_same_ids(tmp_path, dtype, high):
    docs = _documents(1, 60, high)
    write_binidx(tmp_path / "mini", docs, dtype=dtype)
    manifest = run(cfg_for(tmp_path, str(tmp_path / "mini.bin")), progress=False)
    want = {}
    for n, seqs in enumerate(docs):
        ids = [i for s in seqs for i in s]
        if ids and ids[-1] == EOT:
            ids = ids[:-1]
        if ids:
            want[f"{tmp_path / 'mini'}.bin#{n}"] = ids
    samples = read_samples(tmp_path / "out")
    got = {s["meta"]["source"]: s["tokens"].tolist() for s in samples}
    assert got == want and all(s["tokens"].dtype == np.uint16 for s in samples)
    assert manifest["totals"]["skipped"] == {"empty": 2}
    assert manifest["totals"]["stripped_eot"] == sum(1 for i, d in enumerate(docs) if i % 4 and i not in (7, 11))
    assert manifest["input"]["units"] > 3 and {s["split"] for s in samples} == {"train", "val"}
    assert manifest["tokenizer"]["kind"] == "rwkv-world"
    run(cfg_for(tmp_path, str(tmp_path / "mini.bin"), "again"), progress=False)
    assert tree_bytes(tmp_path / "again") == tree_bytes(tmp_path / "out")
    prefix = run(cfg_for(tmp_path, str(tmp_path / "mini"), "prefix"), progress=False)
    assert prefix["shards"] == manifest["shards"]


def test_binidx_needs_its_tokenizer_and_damaged_pairs_are_refused(tmp_path):
    write_binidx(tmp_path / "c", _documents(2, 20, 500))
    cfg = load_config(None, [f"data.input={tmp_path / 'c.idx'}", f"data.output={tmp_path / 'o'}"])
    with pytest.raises(UserError, match="binidx corpus.*data.tokenizer"):
        run(cfg, progress=False)
    good_bin = (tmp_path / "c.bin").read_bytes()
    (tmp_path / "c.bin").write_bytes(good_bin[:-2])
    with pytest.raises(UserError, match=r"c\.bin: .*does not match"):
        run(cfg_for(tmp_path, str(tmp_path / "c.bin"), "o1"), progress=False)
    (tmp_path / "c.bin").write_bytes(good_bin)
    idx = bytearray((tmp_path / "c.idx").read_bytes())
    (tmp_path / "c.idx").write_bytes(bytes(idx[:-8]))
    with pytest.raises(UserError, match=r"c\.idx: .*truncated"):
        run(cfg_for(tmp_path, str(tmp_path / "c.bin"), "o2"), progress=False)
    idx[9:17] = struct.pack("<Q", 2)
    (tmp_path / "c.idx").write_bytes(bytes(idx))
    with pytest.raises(UserError, match=r"c\.idx: binidx version 2"):
        run(cfg_for(tmp_path, str(tmp_path / "c.bin"), "o3"), progress=False)
    (tmp_path / "c.idx").unlink()
    with pytest.raises(UserError, match=r"c\.idx is missing"):
        run(cfg_for(tmp_path, str(tmp_path / "c.bin"), "o4"), progress=False)
