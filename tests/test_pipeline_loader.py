"""A data dir's shards as the loaders read them: windows, order, prefetching, checks, clear errors.
(The global order itself, across ranks and resumes, is tested in test_pipeline_data.py.)"""
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.data_loader import DataDir, ShardError, read_shard
from pipeline.data.global_batches import GlobalBatches
from pipeline.data.val_windows import ValWindows

from pipeline_helpers import make_data_dir


def batches(data, seed=7, shuffle=True, micro=3):
    """One rank's training micro-batches of `data` (12-token windows, no read-ahead thread)."""
    return GlobalBatches([data], [1.0], ["d"], 12, seed, shuffle, 2, micro, 1, 0, 1, read_ahead=0)


def test_windows_overlap_by_one_token(tmp_path):
    make_data_dir(tmp_path)
    a, b = ValWindows(DataDir.open(tmp_path), 10, 2).tokens(range(2))
    assert len(a) == 11 and a[-1] == b[0]


def test_different_seed_or_epoch_changes_order(tmp_path):
    make_data_dir(tmp_path, docs_per_shard=(8, 8, 8, 8))
    data = DataDir.open(tmp_path)
    first = [batches(data, seed=s).next_batch() for s in (1, 1, 2)]
    assert (first[0] == first[1]).all() and not (first[0] == first[2]).all()
    order = batches(data, seed=1).orders[0]  # epoch 1 reads the shards and documents in another order
    assert list(order.shard_order(1)) != list(order.shard_order(0))
    assert list(order.doc_order(1, 0, 8)) != list(order.doc_order(0, 0, 8))


def test_bad_data_dirs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        DataDir.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        DataDir.open(tmp_path / "empty")
    make_data_dir(tmp_path / "d")
    data = DataDir.open(tmp_path / "d")
    with pytest.raises(ValueError, match="model.vocab_size=100"):
        data.check_model(100, 16, 1)
    with pytest.raises(ValueError, match="model.ctx_len=100000"):
        data.check_model(300, 100000, 1)
    (tmp_path / "d" / "train-000001.tar").unlink()
    with pytest.raises(ShardError, match="train-000001.tar: is listed in the manifest but missing"):
        DataDir.open(tmp_path / "d")


def test_prefetcher_hands_out_the_stream_in_order_and_saves_the_consumed_position(tmp_path):
    from pipeline.data.prefetch import Prefetcher

    make_data_dir(tmp_path, docs_per_shard=(3, 2, 4, 3), max_len=40)
    data = DataDir.open(tmp_path)
    plain = batches(data)
    ahead = Prefetcher(batches(data), batch_size=3, depth=5)
    try:
        for _ in range(7):
            np.testing.assert_array_equal(ahead.next_batch(), plain.next_batch(3))
        # the thread has read further, but the saved position is right after the 7th batch
        assert ahead.state_dict() == plain.state_dict()
    finally:
        ahead.close()
    resumed = batches(data)
    resumed.load_state_dict(ahead.state_dict())
    np.testing.assert_array_equal(resumed.next_batch(3), plain.next_batch(3))


def test_prefetcher_reports_a_broken_shard(tmp_path):
    from pipeline.data.prefetch import Prefetcher

    make_data_dir(tmp_path, docs_per_shard=(3,), max_len=40)
    data = DataDir.open(tmp_path)
    (tmp_path / "train-000000.tar").write_bytes(b"this is not a tar file")
    ahead = Prefetcher(batches(data, micro=2), batch_size=2)
    try:
        with pytest.raises(ShardError, match="train-000000.tar: its sha256 differs"):
            ahead.next_batch()
    finally:
        ahead.close()


def _flip_last_token_byte(shard: Path) -> None:
    """Change one token inside the tar, keeping the file's size and its tar structure valid."""
    raw = bytearray(shard.read_bytes())
    at = raw.rindex(b".tokens.npy")  # the last member's header; its data follows after 512 bytes
    data_start = (at // 512 + 1) * 512
    header_len = 10 + int.from_bytes(raw[data_start + 8:data_start + 10], "little")
    raw[data_start + header_len] ^= 0x01
    shard.write_bytes(bytes(raw))


def test_shards_are_checked_against_the_manifest(tmp_path):
    """Sizes when the data dir opens; the sha256 the first time a shard is read; ids in range."""
    make_data_dir(tmp_path, docs_per_shard=(3, 4), max_len=40)
    shard = tmp_path / "train-000001.tar"
    good = shard.read_bytes()
    shard.write_bytes(good[:-512])  # torn
    with pytest.raises(ShardError) as err:
        DataDir.open(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(shard) in message and f"data.output={tmp_path}" in message
    assert f"has {len(good) - 512} bytes, the manifest recorded {len(good)}" in message

    shard.write_bytes(good)
    _flip_last_token_byte(shard)  # same size, still a valid tar: only the hash can tell
    data = DataDir.open(tmp_path)
    stream = batches(data, shuffle=False, micro=1)
    with pytest.raises(ShardError, match="train-000001.tar: its sha256 differs from the manifest's"):
        for _ in range(40):
            stream.next_batch()
    unchecked = DataDir.open(tmp_path, verify_shards=False)
    altered = read_shard(shard)
    assert len(unchecked.read(unchecked.splits["train"][1])) == 4 and altered  # parsed, not hashed

    shard.write_bytes(good)
    data = DataDir.open(tmp_path)
    docs = data.read(data.splits["train"][1])
    assert data._verified == {"train-000001.tar"} and len(docs) == 4
    data.vocab_size = int(max(d.max() for d in docs))  # as if the ids came from a larger vocabulary
    data._verified.clear()
    with pytest.raises(ShardError, match=f"token id {data.vocab_size}, outside the tokenizer's"):
        data.read(data.splits["train"][1])
