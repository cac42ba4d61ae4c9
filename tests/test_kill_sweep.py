"""benchmarks/kill_sweep.py draws its kill points reproducibly from the run's real kill points,
each a fault spec the trainer parses."""
import sys

import pytest

from pipeline.training import faults
from pipeline_helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from kill_sweep import kill_points  # noqa: E402


def test_points_are_seeded_distinct_and_parse():
    points = kill_points(6, seed=3, steps=8, save_every=2)
    assert points == kill_points(6, seed=3, steps=8, save_every=2)
    assert points != kill_points(6, seed=4, steps=8, save_every=2)
    assert len(set(points)) == 6
    for what, step, rank in (next(iter(faults._parse(p))) for p in points):
        assert rank in (0, 1) and 1 <= step < 8
        assert what == "kill_after_step" or step % 2 == 0  # kills in a save only where one happens


def test_every_point_is_reachable_and_no_more():
    everything = kill_points(20, seed=0, steps=8, save_every=2)  # 7 steps x 2 ranks + 3 saves x 2
    assert len(set(everything)) == 20
    with pytest.raises(ValueError, match="21: this run has 20 kill points"):
        kill_points(21, seed=0, steps=8, save_every=2)
