"""The training stream: disjoint ranks, full epoch coverage, exact save/restore, clear errors."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.data_loader import DataDir, ShardError, read_shard

from pipeline_helpers import make_data_dir


def consumed_tokens(stream, until_epoch=1):
    """The token sequence a stream hands out (windows overlap by one) in its first epoch."""
    epoch_tokens = sum(stream.shards[i].tokens + stream.shards[i].samples
                       for i in stream._epoch_shards())
    out, total = [], 0
    while total < epoch_tokens:
        w = stream.next_window()
        out.append(w if not out else w[1:])
        total += len(out[-1])
    return np.concatenate(out)[:epoch_tokens]


def doc_ids(tokens, eot):
    """Documents are identified by their first token; split the stream at end-of-text."""
    ids, start = [], True
    for t in tokens:
        if start and t != eot:
            ids.append(int(t) - 1)
        start = t == eot
    return ids


@pytest.mark.parametrize("world, counts", [(1, (5, 7, 4, 6)), (2, (5, 7, 4, 6)), (3, (5, 7)), (2, (9,))])
def test_ranks_are_disjoint_and_an_epoch_covers_every_document(tmp_path, world, counts):
    docs, eot = make_data_dir(tmp_path, docs_per_shard=counts)
    data = DataDir.open(tmp_path)
    train_ids = sorted(i for i, (split, _) in docs.items() if split == "train")
    streams = [data.stream("train", r, world, 16, 3, True) for r in range(world)]
    if len(counts) >= world:  # shards split across ranks: together they read every document
        seen = []
        for rank in range(world):
            seen += doc_ids(consumed_tokens(data.stream("train", rank, world, 16, 3, True)), eot)
        assert sorted(seen) == train_ids
    else:  # fewer shards than ranks: rank r takes windows r, r + world, ... of the one stream
        assert all(s.by_window for s in streams)
        single = data.stream("train", 0, 1, 16, 3, True)
        assert sorted(doc_ids(consumed_tokens(single), eot)) == train_ids
        single.reset()
        every = [tuple(single.next_window()) for _ in range(12 * world)]
        streams = [data.stream("train", r, world, 16, 3, True) for r in range(world)]
        for rank, stream in enumerate(streams):
            assert [tuple(stream.next_window()) for _ in range(12)] == every[rank::world]
        streams = [data.stream("train", r, world, 16, 3, True) for r in range(world)]
    windows = [[tuple(s.next_window()) for _ in range(12)] for s in streams]
    for a in range(world):
        for b in range(a + 1, world):
            assert not set(windows[a]) & set(windows[b])


def test_single_rank_epoch_is_exactly_all_documents(tmp_path):
    docs, eot = make_data_dir(tmp_path)
    stream = DataDir.open(tmp_path).stream("train", 0, 1, 8, 5, True)
    tokens = consumed_tokens(stream)
    ids = doc_ids(tokens, eot)
    train = [i for i, (split, _) in docs.items() if split == "train"]
    assert sorted(ids) == train
    assert ids != sorted(train)  # shuffled
    # every document arrives whole and in order of its tokens
    pieces = np.split(tokens, np.flatnonzero(tokens == eot) + 1)[:-1]
    assert len(pieces) == len(train)
    for piece in pieces:
        doc = docs[int(piece[0]) - 1][1]
        np.testing.assert_array_equal(piece[:-1], doc)


def test_windows_overlap_by_one_token(tmp_path):
    make_data_dir(tmp_path)
    stream = DataDir.open(tmp_path).stream("train", 0, 1, 10, 0, False)
    a, b = stream.next_window(), stream.next_window()
    assert len(a) == 11 and a[-1] == b[0]


@pytest.mark.parametrize("world", [1, 2])
def test_restored_stream_continues_identically(tmp_path, world):
    make_data_dir(tmp_path, docs_per_shard=(3, 2, 4, 3), max_len=40)
    data = DataDir.open(tmp_path)
    for cut in (1, 5, 23, 61):  # inside documents, across shards and across epochs
        a = data.stream("train", world - 1, world, 12, 7, True)
        for _ in range(cut):
            a.next_window()
        state = a.state_dict()
        b = data.stream("train", world - 1, world, 12, 7, True)
        b.load_state_dict(state)
        for _ in range(30):
            np.testing.assert_array_equal(a.next_window(), b.next_window())


def test_different_seed_or_epoch_changes_order(tmp_path):
    docs, eot = make_data_dir(tmp_path, docs_per_shard=(8, 8, 8, 8))
    data = DataDir.open(tmp_path)
    first = [data.stream("train", 0, 1, 16, s, True).next_batch(4) for s in (1, 1, 2)]
    assert (first[0] == first[1]).all() and not (first[0] == first[2]).all()
    # epoch 1 reads the same documents in another order (shards and documents reshuffled)
    epochs = []
    for epoch in (0, 1):
        stream = data.stream("train", 0, 1, 16, 1, True)
        stream.epoch = epoch  # as a stream that has just finished `epoch` whole epochs
        epochs.append((stream._epoch_shards(), doc_ids(consumed_tokens(stream), eot)))
    (order0, ids0), (order1, ids1) = epochs
    assert sorted(ids1) == sorted(ids0) == sorted(i for i, (sp, _) in docs.items() if sp == "train")
    assert ids1 != ids0 and order1 != order0
    # and a stream really gets there by reading on: its epoch-1 windows are those of the above
    stream = data.stream("train", 0, 1, 16, 1, True)
    while stream.epoch == 0:
        stream.next_window()
    assert stream._epoch_shards() == order1


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
    state = data.stream("train", 0, 2, 8, 0, True).state_dict()
    with pytest.raises(ValueError, match="world size"):
        data.stream("train", 0, 1, 8, 0, True).load_state_dict(state)
    (tmp_path / "d" / "train-000001.tar").unlink()
    with pytest.raises(ShardError, match="train-000001.tar: is listed in the manifest but missing"):
        DataDir.open(tmp_path / "d")


def test_prefetcher_hands_out_the_stream_in_order_and_saves_the_consumed_position(tmp_path):
    from pipeline.data.prefetch import Prefetcher

    make_data_dir(tmp_path, docs_per_shard=(3, 2, 4, 3), max_len=40)
    data = DataDir.open(tmp_path)
    plain = data.stream("train", 0, 1, 12, 7, True)
    ahead = Prefetcher(data.stream("train", 0, 1, 12, 7, True), batch_size=3, depth=5)
    try:
        for _ in range(7):
            np.testing.assert_array_equal(ahead.next_batch(), plain.next_batch(3))
        # the thread has read further, but the saved position is right after the 7th batch
        assert ahead.state_dict() == plain.state_dict()
    finally:
        ahead.close()
    resumed = data.stream("train", 0, 1, 12, 7, True)
    resumed.load_state_dict(ahead.state_dict())
    np.testing.assert_array_equal(resumed.next_batch(3), plain.next_batch(3))


def test_prefetcher_reports_a_broken_shard(tmp_path):
    from pipeline.data.prefetch import Prefetcher

    make_data_dir(tmp_path, docs_per_shard=(3,), max_len=40)
    data = DataDir.open(tmp_path)
    (tmp_path / "train-000000.tar").write_bytes(b"this is not a tar file")
    ahead = Prefetcher(data.stream("train", 0, 1, 12, 7, True), batch_size=2)
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
    stream = data.stream("train", 0, 1, 8, 0, False)
    with pytest.raises(ShardError, match="train-000001.tar: its sha256 differs from the manifest's"):
        for _ in range(40):
            stream.next_window()
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
