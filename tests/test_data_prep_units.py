"""data_prep without Ray: config, sources, bad inputs, tokenizer pieces, resume (executor=local)."""
from __future__ import annotations

import json
import random
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from data_prep import tokenizer as dp_tokenizer
from data_prep.config import DataConfig, load_config
from data_prep.errors import UserError
from data_prep.job import run
from data_prep_helpers import (TRICKY, decoder, make_text, make_text_corpus, read_samples, tree_bytes,
                               write_jsonl)


def cfg_for(tmp: Path, *overrides: str, out: str = "out") -> DataConfig:
    return load_config(None, [f"data.output={tmp / out}", "data.vocab_size=400", "data.executor=local",
                              "data.shard_bytes=3000", "data.val_fraction=0.2", "data.unit_bytes=6000",
                              *overrides])


# ---- config -------------------------------------------------------------------------------------

def test_config_defaults_fit_the_trainer_subclass():
    cfg = DataConfig()
    assert all(f.name != "path" for f in fields(DataConfig))
    assert cfg.input is None and cfg.output == "data/default" and cfg.vocab_size == 16384
    assert cfg.on_invalid_utf8 == "skip" and cfg.dedup is False and cfg.overwrite is False


@pytest.mark.parametrize("override, needle", [
    ("data.bogus=1", "bogus"),
    ("data.vocab_size=lots", "data.vocab_size"),
    ("data.on_invalid_utf8=ignore", "data.on_invalid_utf8"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("train.steps=3", "train"),
    ("data.shard_bytes", "key=value"),
])
def test_config_errors_name_the_key(override, needle):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  vocab_size: 1000\n  dedup: true\n")
    cfg = load_config(str(f), ["data.vocab_size=2000"])
    assert (cfg.vocab_size, cfg.dedup) == (2000, True)
    with pytest.raises(UserError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"), [])


# ---- pieces: long documents are encoded in pieces with the same ids -------------------------------

def test_pieces_give_the_same_ids_as_one_pass(tmp_path):
    rng = random.Random(1)
    texts = TRICKY + [make_text(rng, 300) for _ in range(20)]
    tok = dp_tokenizer.load(dp_tokenizer.train_tokenizer(texts, 400))
    for text in texts:
        pieces = list(dp_tokenizer.safe_pieces(text, 7))
        assert "".join(pieces) == text
        whole = np.asarray(tok.encode(text, add_special_tokens=False).ids)
        (split,) = dp_tokenizer.encode_documents(tok, [text], np.dtype(np.uint16), piece_chars=7, batch_chars=50)
        assert np.array_equal(whole, split)
        assert tok.decode(split.tolist(), skip_special_tokens=False) == text
    assert len(list(dp_tokenizer.safe_pieces(texts[-1], 7))) > 10  # the cuts really happen


def test_tokenizer_training_is_deterministic():
    texts = [make_text(random.Random(i), 200) for i in range(30)]
    assert dp_tokenizer.train_tokenizer(texts, 350) == dp_tokenizer.train_tokenizer(iter(texts), 350)


# ---- units: byte ranges never cut a document ------------------------------------------------------

def test_unit_boundaries_never_cut_a_document_or_a_utf8_sequence(tmp_path):
    from data_prep.readers import ReadOptions, read_piece
    from data_prep.sources import find_corpus
    from data_prep.units import make_units

    texts = [f"{i} \u65e5\u672c\u8a9e \U0001F600 " * (i % 7 + 1) for i in range(60)]
    lines = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in texts]
    lines[10] = b'{"text": "raw \xff byte"}'
    lines[20] = b"{not json"
    write_jsonl(tmp_path / "big.jsonl", lines)
    opts = ReadOptions("text", "skip")
    for unit_bytes in (1, 7, 64, 333, 10**6):
        units = make_units(find_corpus(str(tmp_path / "big.jsonl")), unit_bytes)
        got = [rec for u in units for p in u.pieces for rec in read_piece(p, opts)]
        assert len(got) == len(lines)
        assert [r.text for r in got if r.skip is None] == [t for i, t in enumerate(texts) if i not in (10, 20)]
        assert [r.skip[0] for r in got if r.skip] == ["invalid_utf8", "invalid_json"]
    assert len(make_units(find_corpus(str(tmp_path / "big.jsonl")), 64)) > 10


# ---- end to end in one process ---------------------------------------------------------------

def test_round_trip_manifest_and_splits(tmp_path):
    docs = make_text_corpus(tmp_path / "corpus")
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}")
    manifest = run(cfg, progress=False)
    out = Path(cfg.output)
    samples = read_samples(out)
    decode = decoder(out)
    seen = Counter(s["meta"]["source"] for s in samples)
    assert seen == Counter({p: 1 for p, t in docs.items() if t})  # each document in exactly one split
    for s in samples:
        assert s["tokens"].dtype == np.uint16 and s["tokens"].ndim == 1
        assert decode(s["tokens"]) == docs[s["meta"]["source"]]
    assert len({s["key"] for s in samples}) == len(samples)
    assert {s["split"] for s in samples} == {"train", "val"}
    for entry in manifest["shards"]:
        assert entry["sha256"] == tree_bytes(out)[entry["name"]]
        mine = [s for s in samples if s["shard"] == entry["name"]]
        assert entry["samples"] == len(mine) and entry["tokens"] == sum(len(s["tokens"]) for s in mine)
    assert len(manifest["shards"]) > 3
    assert manifest["totals"]["documents"] == len(samples)
    assert manifest["tokenizer"]["sha256"] == dp_tokenizer.sha256_hex((out / "tokenizer.json").read_bytes())
    assert manifest["config"]["vocab_size"] == 400 and "output" not in manifest["config"]
    eot = dp_tokenizer.load((out / "tokenizer.json").read_text()).token_to_id(dp_tokenizer.EOT)
    assert eot is not None and all(eot not in s["tokens"] for s in samples)


def test_the_trainer_reads_the_output(tmp_path):
    from pipeline.data.data_loader import DataDir
    from pipeline.data.global_batches import GlobalBatches

    make_text_corpus(tmp_path / "corpus")
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}")
    manifest = run(cfg, progress=False)
    data = DataDir.open(cfg.output)
    assert data.vocab_size == manifest["tokenizer"]["vocab_size"]
    batches = GlobalBatches([data], [1.0], ["d"], 16, 0, False, 1, 1, 1, 0, 1, read_ahead=0)
    assert batches.next_batch().shape == (1, 17)


def _bad_corpus(root: Path) -> None:
    root.mkdir()
    (root / "a_good.txt").write_text("hello world\n")
    (root / "b_empty.txt").write_bytes(b"")
    (root / "c_bad_utf8.txt").write_bytes(b"abc \xff\xfe def\n")
    (root / "d_binary.dat").write_bytes(b"\x7fELF\x00\x00\x01" + bytes(range(256)))
    write_jsonl(root / "e_docs.jsonl", [
        {"text": "first good line"},
        b"{not json",
        {"body": "no text field"},
        {"text": 5},
        b"",
        {"text": ""},
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"text": "raw \xff byte"}',
        {"text": "last good line", "id": 7},
    ])
    write_jsonl(root / "f_docs.jsonl.gz", [{"text": "gz one"}, b"[1, 2]", {"text": "gz two"}], gz=True)


def test_bad_inputs_are_skipped_counted_and_named(tmp_path, capsys):
    _bad_corpus(tmp_path / "bad")
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 'bad'}", "data.vocab_size=300")
    manifest = run(cfg, progress=False)
    skipped = manifest["totals"]["skipped"]
    assert skipped == {"binary": 1, "empty": 3, "invalid_json": 1, "invalid_utf8": 3, "missing_field": 3}
    assert manifest["totals"]["skipped_documents"] == 11
    texts = sorted(decoder(Path(cfg.output))(s["tokens"]) for s in read_samples(Path(cfg.output)))
    assert texts == sorted(["hello world\n", "first good line", "last good line", "gz one", "gz two"])
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad' / 'e_docs.jsonl'}:2 (invalid_json)" in err
    assert f"{tmp_path / 'bad' / 'd_binary.dat'} (binary)" in err
    assert f"{tmp_path / 'bad' / 'f_docs.jsonl.gz'}:2 (missing_field)" in err
    sources = {s["meta"]["source"] for s in read_samples(Path(cfg.output))}
    assert f"{tmp_path / 'bad' / 'e_docs.jsonl'}:9" in sources


def test_invalid_utf8_replace_keeps_the_documents(tmp_path):
    _bad_corpus(tmp_path / "bad")
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 'bad'}", "data.on_invalid_utf8=replace",
                  "data.vocab_size=300")
    manifest = run(cfg, progress=False)
    assert "invalid_utf8" not in manifest["totals"]["skipped"]
    assert manifest["totals"]["replaced_invalid_utf8"] == 3
    texts = {decoder(Path(cfg.output))(s["tokens"]) for s in read_samples(Path(cfg.output))}
    assert "abc \ufffd\ufffd def\n" in texts and "raw \ufffd byte" in texts


def test_dedup_keeps_the_first_copy(tmp_path):
    root = tmp_path / "dups"
    root.mkdir()
    for name, text in [("a.txt", "same text"), ("b.txt", "other"), ("c.txt", "same text")]:
        (root / name).write_text(text)
    write_jsonl(root / "d.jsonl", [{"text": "other"}, {"text": "new"}])
    manifest = run(cfg_for(tmp_path, f"data.input={root}", "data.dedup=true", "data.vocab_size=300"),
                   progress=False)
    assert manifest["totals"]["skipped"] == {"duplicate": 2}
    sources = sorted(s["meta"]["source"] for s in read_samples(tmp_path / "out"))
    assert sources == sorted([str(root / "a.txt"), str(root / "b.txt"), f"{root / 'd.jsonl'}:2"])
    plain = run(cfg_for(tmp_path, f"data.input={root}", "data.vocab_size=300", out="plain"), progress=False)
    assert plain["totals"]["documents"] == 5


def test_parquet_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"content": ["row one", None, "row three", ""]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 't.parquet'}", "data.text_field=content",
                  "data.vocab_size=300")
    manifest = run(cfg, progress=False)
    assert manifest["totals"]["skipped"] == {"empty": 1, "missing_field": 1}
    got = {s["meta"]["source"]: decoder(Path(cfg.output))(s["tokens"]) for s in read_samples(Path(cfg.output))}
    assert got == {f"{tmp_path / 't.parquet'}:1": "row one", f"{tmp_path / 't.parquet'}:3": "row three"}


def test_parquet_without_pyarrow_says_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match="pip install pyarrow"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 't.parquet'}"), progress=False)


def test_nothing_usable_and_missing_input_fail(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_bytes(b"")
    with pytest.raises(UserError, match="no usable documents.*empty=1"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'empty'}"), progress=False)
    with pytest.raises(UserError, match="no such file or directory"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'nope'}", out="o2"), progress=False)
    with pytest.raises(UserError, match="matches no files"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'empty'}/*.md", out="o3"), progress=False)


def test_glob_input_and_long_single_line_document(tmp_path, monkeypatch):
    monkeypatch.setattr(dp_tokenizer, "PIECE_CHARS", 4096)
    monkeypatch.setattr(dp_tokenizer, "BATCH_CHARS", 20000)
    rng = random.Random(3)
    big = make_text(rng, 60000).replace("\n", " ")
    (tmp_path / "c").mkdir()
    write_jsonl(tmp_path / "c" / "big.jsonl", [{"text": big}, {"text": "tail"}])
    (tmp_path / "c" / "skip.md").write_text("not matched by the glob")
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 'c'}/*.jsonl", "data.vocab_size=300")
    manifest = run(cfg, progress=False)
    samples = read_samples(Path(cfg.output))
    assert manifest["input"]["files"] == 1 and len(samples) == 2
    got = {s["meta"]["source"]: decoder(Path(cfg.output))(s["tokens"]) for s in samples}
    assert got[f"{tmp_path / 'c' / 'big.jsonl'}:1"] == big


def test_default_input_is_the_stdlib():
    from data_prep.sources import find_corpus

    corpus = find_corpus(None)
    paths = [f.relpath for f in corpus.files]
    assert len(paths) > 500 and paths == sorted(paths) and "os.py" in paths
    assert all(p.endswith(".py") and "site-packages" not in p for p in paths)


# ---- the output dir across runs ----------------------------------------------------------------

def test_resume_rebuilds_only_what_is_missing_or_damaged(tmp_path, capsys):
    make_text_corpus(tmp_path / "corpus")
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}")
    run(cfg, progress=False)
    out = Path(cfg.output)
    before = tree_bytes(out)
    assert run(cfg, progress=False) and tree_bytes(out) == before
    assert "0 shards built" in capsys.readouterr().out
    # a damaged shard in a complete dir: only its unit is rebuilt
    (out / "train-000000.tar").write_bytes(b"damaged")
    (out / ".train-000001.tar.123-abcd.partial").write_bytes(b"junk")
    run(cfg, progress=False)
    assert tree_bytes(out) == before and not list(out.glob(".*.partial"))
    rebuilt = int(capsys.readouterr().out.split(" shards built")[0].rsplit(" ", 1)[1])
    assert 1 <= rebuilt < len(json.loads((out / "manifest.json").read_text())["shards"])
    # no manifest (a run killed while publishing): staged shards are gone, so units are rebuilt
    (out / "manifest.json").unlink()
    run(cfg, progress=False)
    assert tree_bytes(out) == before


def test_changed_config_or_tokenizer_is_refused_and_overwrite_rebuilds(tmp_path):
    make_text_corpus(tmp_path / "corpus")
    cfg = cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}")
    run(cfg, progress=False)
    with pytest.raises(UserError, match=r"data\.vocab_size: 400 there, 350 now.*overwrite=true"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", "data.vocab_size=350"), progress=False)
    other = tmp_path / "other.json"
    other.write_text(dp_tokenizer.train_tokenizer(["something else entirely"] * 5, 300))
    with pytest.raises(UserError, match="differs from the tokenizer"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", f"data.tokenizer={other}"), progress=False)
    rebuilt = run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", f"data.tokenizer={other}",
                          "data.overwrite=true"), progress=False)
    assert rebuilt["tokenizer"]["sha256"] == dp_tokenizer.sha256_hex(other.read_bytes())
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == other.read_bytes()
    (tmp_path / "corpus" / "part0" / "new.txt").write_text("a new document")
    with pytest.raises(UserError, match="input changed"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", f"data.tokenizer={other}"), progress=False)


def test_a_foreign_non_empty_dir_is_refused(tmp_path):
    make_text_corpus(tmp_path / "corpus")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not made by data_prep"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}"), progress=False)
    run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", "data.overwrite=true"), progress=False)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # overwrite removes only our files
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_given_tokenizer_is_copied_and_gives_identical_shards(tmp_path):
    make_text_corpus(tmp_path / "corpus")
    first = run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", out="a"), progress=False)
    tok = tmp_path / "a" / "tokenizer.json"
    second = run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", f"data.tokenizer={tok}", out="b"),
                 progress=False)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert first["shards"] == second["shards"]
    bad = tmp_path / "noeot.json"
    bad.write_text(json.loads(json.dumps(tok.read_text())).replace("<|endoftext|>", "<|end|>"))
    with pytest.raises(UserError, match="no <\\|endoftext\\|> token"):
        run(cfg_for(tmp_path, f"data.input={tmp_path / 'corpus'}", f"data.tokenizer={bad}", out="c"),
            progress=False)
