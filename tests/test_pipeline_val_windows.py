"""Validation windows: one fixed, unshuffled slice of the val split, split by rank, whose summed
loss is the same mean for any number of ranks (ragged splits included)."""
import numpy as np
import pytest

from pipeline.data.data_loader import DataDir
from pipeline.data.val_windows import ValWindows, check_split, share, summed_loss

from pipeline_helpers import make_data_dir

CTX, COUNT, MICRO = 16, 23, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    docs, eot = make_data_dir(root, docs_per_shard=(4,), val_docs=(6, 5, 7), seed=4)
    return DataDir.open(root), docs, eot


def test_shares_are_contiguous_cover_every_window_once_and_differ_by_at_most_one():
    for count in (0, 1, 7, 23, 24):
        for world in (1, 2, 3, 4, 5):
            shares = [share(count, r, world) for r in range(world)]
            assert [i for s in shares for i in s] == list(range(count))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_any_world_size_scores_the_same_windows_in_the_same_passes(data, world):
    data, _, _ = data
    every = ValWindows(data, CTX, COUNT).tokens(range(COUNT))
    ranks = [list(ValWindows(data, CTX, COUNT, r, world).batches(MICRO)) for r in range(world)]
    assert len({len(batches) for batches in ranks}) == 1  # ZeRO-3: the same forward passes on all
    counted = [b.numpy() for batches in ranks for b, counts in batches if counts]
    np.testing.assert_array_equal(np.concatenate(counted), every)


def test_the_windows_are_the_val_documents_in_file_order(data):
    data, docs, eot = data
    val = [d for split, d in docs.values() if split == "val"]  # in the order they were written
    per_epoch = ValWindows(data, CTX, 1).order.per_epoch
    windows = ValWindows(data, CTX, per_epoch + 2).tokens(range(per_epoch + 2))
    first = np.concatenate([val[0], [eot], val[1]])[:CTX + 1]
    np.testing.assert_array_equal(windows[0], first)
    np.testing.assert_array_equal(windows[per_epoch:], windows[:2])  # a short split starts over


@pytest.mark.parametrize("world", [2, 3, 5])
def test_the_ranks_sums_give_the_one_rank_mean(data, world):
    data, _, _ = data

    def forward(batch):  # a per-token "loss" that differs from window to window
        return batch[:, 1:].double().mean()

    one = summed_loss(forward, ValWindows(data, CTX, COUNT), MICRO, "cpu")
    total = sum(summed_loss(forward, ValWindows(data, CTX, COUNT, r, world), MICRO, "cpu")
                for r in range(world))
    assert total[1] == one[1] == COUNT * CTX
    assert (total[0] / total[1]).item() == pytest.approx((one[0] / one[1]).item(), rel=1e-12)
    targets = ValWindows(data, CTX, COUNT).tokens(range(COUNT))[:, 1:]
    assert (one[0] / one[1]).item() == pytest.approx(float(targets.mean()), rel=1e-12)


def test_a_val_split_without_a_whole_window_is_refused(data):
    data, _, _ = data
    with pytest.raises(ValueError, match="model.ctx_len=100000: no val shard"):
        check_split(data, 100000)
