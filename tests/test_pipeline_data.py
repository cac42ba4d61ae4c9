"""The global window order (pipeline.data): batches that do not depend on the number of ranks, exact
resume across world sizes, weighted mixtures, and data dirs on object storage."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.global_batches import GlobalBatches
from pipeline.data.mixture import quotas
from pipeline.data.sources import open_sources
from pipeline.config import load_run_config
from pipeline.data.data_loader import DataDir
from pipeline.errors import PipelineError

from pipeline_helpers import make_data_dir, metrics, run_train, write_tokenizer

CTX = 16


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Two data dirs of the same tokenizer (a: 5 shards, b: 3) and one of another tokenizer."""
    root = tmp_path_factory.mktemp("data")
    docs_a, eot = make_data_dir(root / "a", docs_per_shard=(5, 7, 4, 6, 8), seed=1)
    docs_b, _ = make_data_dir(root / "b", docs_per_shard=(6, 6, 6), seed=2)
    (root / "b" / "tokenizer.json").write_bytes((root / "a" / "tokenizer.json").read_bytes())
    make_data_dir(root / "other", docs_per_shard=(4, 4), seed=3)
    write_tokenizer(root / "other" / "tokenizer.json", vocab=301)
    return root, docs_a, eot


def streams(data, world, accum, micro=2, seed=3, buffer=2, weights=None):
    sources = data if isinstance(data, list) else [data]
    weights = weights or [1.0] * len(sources)
    names = [f"s{i}" for i in range(len(sources))]
    return [GlobalBatches(sources, weights, names, CTX, seed, True, buffer, micro, accum, r, world)
            for r in range(world)]


def global_steps(ranks, steps):
    """Per step: the sorted windows (as token tuples) all ranks took for it."""
    out = []
    for _ in range(steps):
        windows = []
        for stream in ranks:
            for _ in range(stream.grad_accum):
                windows += [tuple(w) for w in stream.next_batch().numpy()]
        out.append(sorted(windows))
    return out


def test_global_batches_are_the_same_for_any_split_of_ranks_and_accumulation(dirs):
    root, _, _ = dirs
    data = DataDir.open(root / "a")
    one = global_steps(streams(data, 1, 4), 12)
    assert global_steps(streams(data, 2, 2), 12) == one
    assert global_steps(streams(data, 4, 1), 12) == one
    # the split into micro-batches is the same too: rank r of 2 x 2 takes micro-batches 2r, 2r+1
    single, pair = streams(data, 1, 4)[0], streams(data, 2, 2)
    for _ in range(3):
        micro = [single.next_batch() for _ in range(4)]
        split = [pair[r].next_batch() for r in (0, 0, 1, 1)]
        assert all((a == b).all() for a, b in zip(micro, split))


def test_an_epoch_is_every_window_of_every_shard_once_and_windows_are_document_text(dirs):
    root, docs, eot = dirs
    data = DataDir.open(root / "a")
    stream = streams(data, 1, 1, micro=1, buffer=5)[0]
    order = stream.orders[0]
    rows = np.concatenate([stream.step_windows(s) for s in range(order.per_epoch)])
    keys = Counter((int(r[2]), int(r[3])) for r in rows)
    assert set(r[1] for r in rows) == {0} and max(keys.values()) == 1
    assert sorted(keys) == [(s, w) for s in range(5) for w in range(order.windows[s])]
    # consecutive windows interleave shards (the shuffle buffer), not one shard after another
    shards = [int(r[2]) for r in rows]
    assert sum(a != b for a, b in zip(shards, shards[1:])) > len(shards) // 2
    # every window is a stretch of whole documents joined by end-of-text, in the shard's order
    stream = streams(data, 1, 1, micro=1)[0]
    text = {i: d for i, (split, d) in docs.items() if split == "train"}
    for _ in range(20):
        window = stream.next_batch()[0].numpy()
        assert len(window) == CTX + 1
        pieces = np.split(window, np.flatnonzero(window == eot) + 1)
        for piece in pieces[1:-1]:  # the whole documents inside the window
            np.testing.assert_array_equal(piece[:-1], text[int(piece[0]) - 1])


def test_a_rank_reads_only_the_shards_its_slices_need(dirs):
    root, _, _ = dirs
    data = DataDir.open(root / "a")
    read = Counter()
    plain = data.read
    data.read = lambda shard: (read.update([shard.name]), plain(shard))[1]
    ranks = [GlobalBatches([data], [1.0], ["a"], CTX, 3, True, 5, 2, 1, r, 4, read_ahead=0)
             for r in range(4)]
    for stream in ranks:
        stream.next_batch()
    assert sum(read.values()) < 4 * 5  # not every rank read every shard of the buffer
    needed = {int(row[2]) for stream in ranks for row in stream.rank_windows(0)}
    assert {data.splits["train"][i].name for i in needed} == set(read)


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 4)])
def test_a_saved_position_resumes_exactly_with_another_number_of_ranks(dirs, before, after):
    root, _, _ = dirs
    mix = [DataDir.open(root / "a"), DataDir.open(root / "b")]  # mid-mixture too
    whole = global_steps(streams(mix, 1, 4, weights=[0.7, 0.3]), 14)
    first = streams(mix, before, 4 // before, weights=[0.7, 0.3])
    assert global_steps(first, 9) == whole[:9]
    state = json.loads(json.dumps(first[0].state_dict()))  # as written into a checkpoint
    assert all(s.state_dict() == state for s in first)
    resumed = streams(mix, after, 4 // after, weights=[0.7, 0.3])
    for stream in resumed:
        stream.load_state_dict(state)
    assert global_steps(resumed, 5) == whole[9:]
    other = streams(mix, after, 1, micro=3, weights=[0.7, 0.3])[0]  # another global batch: refused
    with pytest.raises(PipelineError, match="global batches of 8 windows"):
        other.load_state_dict(state)


def test_mixture_shares_follow_the_weights(dirs):
    root, _, _ = dirs
    mix = [DataDir.open(root / "a"), DataDir.open(root / "b")]
    stream = streams(mix, 1, 1, micro=8, weights=[0.7, 0.3], seed=11)[0]
    rows = np.concatenate([stream.step_windows(s) for s in range(250)])  # 2,000 windows
    share = np.bincount(rows[:, 0], minlength=2) / len(rows)
    assert abs(share[0] - 0.7) <= 0.02 and abs(share[1] - 0.3) <= 0.02
    assert stream.tokens_by_source(250) == {"s0": int((rows[:, 0] == 0).sum()) * CTX,
                                            "s1": int((rows[:, 0] == 1).sum()) * CTX}
    # the choice is seeded: another seed draws another order with the same shares
    other = streams(mix, 1, 1, micro=8, weights=[0.7, 0.3], seed=12)[0]
    assert (other.step_windows(0)[:, 0] != rows[:8, 0]).any() or \
        (other.step_windows(1)[:, 0] != rows[8:16, 0]).any()
    assert quotas([1, 1, 1]).tolist() == [334, 333, 333]


def test_mixture_config_is_checked_up_front(dirs):
    root, _, _ = dirs

    def cfg(*overrides):
        return load_run_config(None, list(overrides)).data

    data = open_sources(cfg(f"data.mix=[{{path: {root / 'a'}, weight: 2}},"
                            f"{{path: {root / 'b'}, weight: 1}}]"))
    assert [s.name for s in data.sources] == ["a", "b"] and data.vocab_size == 300
    tags = data.tags()
    assert tags["data_mix/b/manifest_sha256"] == data.sources[1].data.manifest_sha256
    with pytest.raises(ValueError) as err:
        open_sources(cfg(f"data.mix=[{{path: {root / 'a'}}},{{path: {root / 'other'}}}]"))
    assert str(root / "a") in str(err.value) and str(root / "other") in str(err.value)
    assert "different tokenizers" in str(err.value)
    with pytest.raises(ValueError, match=r"data.mix\[1\].weight=0.0001"):
        open_sources(cfg(f"data.mix=[{{path: {root / 'a'}}},{{path: {root / 'b'}, weight: 0.0001}}]"))
    with pytest.raises(ValueError, match=r"data.mix\[0\].weight=-1.0: must be > 0"):
        cfg("data.mix=[{path: x, weight: -1}]")


def upload(local: Path, url: str) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    for path in sorted(local.iterdir()):
        fs.put_file(str(path), f"{root}/{path.name}")


def test_a_data_dir_on_object_storage_reads_as_the_local_copy(dirs, s3_bucket):
    root, _, _ = dirs
    upload(root / "a", f"{s3_bucket}/a")
    here, there = DataDir.open(root / "a"), DataDir.open(f"{s3_bucket}/a")
    assert there.manifest_sha256 == here.manifest_sha256 and there.tokenizer_sha256 == here.tokenizer_sha256
    a, b = streams(here, 1, 2)[0], streams(there, 1, 2)[0]
    for _ in range(6):
        assert (a.next_batch() == b.next_batch()).all()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DataDir.open(f"{s3_bucket}/missing")


@pytest.mark.slow
def test_training_on_a_mixture_from_object_storage_matches_the_local_copy(dirs, s3_endpoint, s3_bucket,
                                                                        tmp_path):
    """One local run with MLflow (tags, per-source tokens) and the same mixture read from S3."""
    from mlflow import MlflowClient
    from s3_server import s3_environment

    root, _, _ = dirs
    for name in ("a", "b"):
        upload(root / name, f"{s3_bucket}/{name}")
    args = ["train.max_steps=3", "train.global_batch=8", "train.export=false", "train.save_every=0",
            "data.path=data/default"]  # the default: a mixture names its dirs in data.mix only

    def mix(base):
        return f"data.mix=[{{path: {base}/a, weight: 0.7}},{{path: {base}/b, weight: 0.3}}]"

    run_train(tmp_path, "train.run_name=local", mix(root), "tracking.enabled=true", *args)
    run_train(tmp_path, "train.run_name=s3", mix(s3_bucket), *args, env=s3_environment(s3_endpoint))
    local, remote = metrics(tmp_path, "local"), metrics(tmp_path, "s3")
    assert [r["loss"] for r in remote] == [r["loss"] for r in local]
    assert [r["tokens/a"] + r["tokens/b"] for r in local] == [r["tokens"] for r in local]
    assert 0 < local[-1]["tokens/b"] < local[-1]["tokens/a"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run_id = (tmp_path / "runs" / "local" / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    manifests = {name: DataDir.open(root / name).manifest_sha256 for name in ("a", "b")}
    assert run.data.tags["data_mix/a/manifest_sha256"] == manifests["a"]
    assert run.data.tags["data_mix/b/manifest_sha256"] == manifests["b"]
    assert run.data.metrics["tokens/b"] == local[-1]["tokens/b"]
