"""The Ray path of data_prep against the single-process path: the same bytes on 1 or 2 workers,
dedup across units and files, errors inside tasks."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.config import load_config
from data_prep.errors import UserError
from data_prep.job import run
from data_prep_helpers import (decoder, make_text_corpus, read_samples, tree_bytes, write_binidx,
                               write_jsonl)


def cfg_for(tmp: Path, out: str, *overrides: str):
    return load_config(None, [f"data.output={tmp / out}", "data.vocab_size=500", "data.shard_bytes=4000",
                              "data.val_fraction=0.15", "data.unit_bytes=3000", "data.executor=ray", *overrides])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Small text files next to a JSONL file large enough to be cut into many units, with bad
    lines inside the cut ranges and a duplicate of a text file inside the JSONL."""
    root = tmp_path_factory.mktemp("corpus") / "texts"
    docs = make_text_corpus(root, n=30)
    records = [{"text": f"record {i} \u65e5\u672c " * (i % 13 + 1)} for i in range(300)]
    records[40], records[150] = b"{broken", b'{"text": "bad \xff utf8"}'
    records[200] = {"text": docs[str(root / "part0" / "doc009.txt")]}
    write_jsonl(root / "records.jsonl", records)
    return root, docs


def test_one_and_two_workers_and_local_write_the_same_bytes(corpus, tmp_path):
    import ray

    assert not ray.is_initialized()
    root, docs = corpus
    outs = {}
    for name, extra in [("local", "data.executor=local"), ("one", "data.num_cpus=1"), ("two", "data.num_cpus=2")]:
        outs[name] = run(cfg_for(tmp_path, name, f"data.input={root}", extra), progress=False)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two") == tree_bytes(tmp_path / "local")
    assert outs["one"] == outs["two"] == outs["local"]
    m = outs["local"]
    assert m["input"]["units"] > 10 and len(m["shards"]) > 10
    assert m["totals"]["skipped"] == {"invalid_json": 1, "invalid_utf8": 1}
    samples, decode = read_samples(tmp_path / "two"), decoder(tmp_path / "two")
    assert len(samples) == len(docs) + 298
    for s in samples:
        source = s["meta"]["source"]
        if source.endswith(".txt"):
            assert decode(s["tokens"]) == docs[source]
        elif not source.endswith(":201"):
            i = int(source.rsplit(":", 1)[1]) - 1
            assert decode(s["tokens"]) == f"record {i} \u65e5\u672c " * (i % 13 + 1)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_dedup_across_units_and_files_keeps_the_first_copy(ray_session, corpus, tmp_path):
    root, docs = corpus
    write_jsonl(root.parent / "zz_extra.jsonl", [{"text": docs[str(root / "part1" / "doc001.txt")]},
                                              {"text": "record 5 \u65e5\u672c " * 6}, {"text": "fresh"}])
    via_ray = run(cfg_for(tmp_path, "ray", f"data.input={root.parent}", "data.dedup=true"), progress=False)
    local = run(cfg_for(tmp_path, "local", f"data.input={root.parent}", "data.dedup=true",
                        "data.executor=local"), progress=False)
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local") and via_ray == local
    assert via_ray["totals"]["skipped"]["duplicate"] == 3
    sources = {s["meta"]["source"] for s in read_samples(tmp_path / "ray")}
    extra = root.parent / "zz_extra.jsonl"
    assert f"{extra}:3" in sources and f"{extra}:1" not in sources and f"{extra}:2" not in sources
    assert str(root / "part0" / "doc009.txt") in sources and f"{root / 'records.jsonl'}:201" not in sources
    assert str(root / "part1" / "doc001.txt") in sources and f"{root / 'records.jsonl'}:6" in sources
    (root.parent / "zz_extra.jsonl").unlink()


def test_ray_resumes_a_damaged_dir(ray_session, corpus, tmp_path, capsys):
    root, _ = corpus
    cfg = cfg_for(tmp_path, "out", f"data.input={root}")
    run(cfg, progress=False)
    before = tree_bytes(tmp_path / "out")
    for name in ("train-000001.tar", "val-000000.tar"):
        (tmp_path / "out" / name).write_bytes(b"truncated")
    capsys.readouterr()
    run(cfg, progress=False)
    assert tree_bytes(tmp_path / "out") == before
    assert "verified and kept" in capsys.readouterr().out


def test_errors_inside_tasks_reach_the_user(ray_session, tmp_path):
    import numpy as np

    docs = [[[5, 6, 7], [8, 0]]] * 200 + [[[1, 70000, 0]]] + [[[9, 9]]] * 50
    write_binidx(tmp_path / "corpus", docs, dtype=np.int32)
    with pytest.raises(UserError, match=r"corpus.bin: document 200 holds id 70000, outside"):
        run(cfg_for(tmp_path, "out", f"data.input={tmp_path / 'corpus.bin'}", "data.tokenizer=rwkv-world",
                    "data.unit_bytes=400"), progress=False)
