"""The Ray path of data_prep against the single-process path, in one shared local Ray session."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.config import load_config
from data_prep.errors import UserError
from data_prep.job import Builder, build_with_ray, obtain_tokenizer, run
from data_prep.sharding import make_plan
from data_prep.sources import find_corpus
from data_prep.tokenizer import describe
from data_prep.writer import ShardJob
from data_prep_helpers import decoder, make_text_corpus, read_samples, tree_bytes, write_jsonl


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def cfg_for(tmp: Path, out: str, *overrides: str):
    return load_config(None, [f"data.output={tmp / out}", "data.vocab_size=500", "data.shard_bytes=4000",
                              "data.val_fraction=0.15", *overrides])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = make_text_corpus(root / "texts", n=40)
    write_jsonl(root / "texts" / "records.jsonl", [{"text": f"record {i} " * (i + 1)} for i in range(30)])
    return root / "texts", docs


def test_ray_writes_the_same_bytes_as_one_process(ray_session, corpus, tmp_path, capsys):
    root, docs = corpus
    via_ray = run(cfg_for(tmp_path, "ray", f"data.input={root}"), progress=False)
    via_local = run(cfg_for(tmp_path, "local", f"data.input={root}", "data.executor=local"), progress=False)
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")  # tokenizer training included
    assert via_ray == via_local and len(via_ray["shards"]) >= 6
    samples = read_samples(tmp_path / "ray")
    decode = decoder(tmp_path / "ray")
    assert len(samples) == via_ray["totals"]["documents"] == len(docs) + 30
    for s in samples:
        source = s["meta"]["source"]
        if source.endswith(".txt"):
            assert decode(s["tokens"]) == docs[source]
        else:
            i = int(source.rsplit(":", 1)[1]) - 1
            assert decode(s["tokens"]) == f"record {i} " * (i + 1)
    capsys.readouterr()
    before = tree_bytes(tmp_path / "ray")
    run(cfg_for(tmp_path, "ray", f"data.input={root}"), progress=False)
    assert tree_bytes(tmp_path / "ray") == before
    assert f"0 shards built, {len(via_ray['shards'])} verified and kept" in capsys.readouterr().out


def test_ray_resumes_a_damaged_dir(ray_session, corpus, tmp_path):
    root, _ = corpus
    cfg = cfg_for(tmp_path, "out", f"data.input={root}")
    run(cfg, progress=False)
    before = tree_bytes(tmp_path / "out")
    (tmp_path / "out" / "manifest.json").unlink()
    for name in ("train-000001.tar", "val-000000.tar"):
        (tmp_path / "out" / name).write_bytes(b"truncated")
    run(cfg, progress=False)
    assert tree_bytes(tmp_path / "out") == before


def test_errors_inside_tasks_reach_the_user(ray_session, tmp_path):
    root = tmp_path / "c"
    make_text_corpus(root, n=10)
    cfg = cfg_for(tmp_path, "out", f"data.input={root}", "data.shard_bytes=100000", "data.val_fraction=0")
    (tmp_path / "out").mkdir()
    plan = make_plan(find_corpus(str(root)), cfg, lambda skipped: None)
    tok = obtain_tokenizer(cfg, tmp_path / "out", plan)
    victim = plan.shards[0].docs[3][1].path
    Path(victim).write_text("changed after planning")
    builder = Builder(plan, ShardJob(cfg.output, describe(tok)["sha256"], "text", "skip"), tok, False)
    with pytest.raises(UserError, match=f"{victim} changed while data_prep was running"):
        build_with_ray(cfg, builder)
