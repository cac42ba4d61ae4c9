"""benchmarks/kill_sweep.py draws its kill points reproducibly from the run's real kill points
(after a step, in a save, in validation, and double kills), each a fault spec the trainer parses;
a kill in validation followed by a second kill of the resumed run still resumes bitwise."""
import sys

import pytest

from pipeline.instruments import faults
from pipeline_helpers import ROOT, make_data_dir

sys.path.insert(0, str(ROOT / "benchmarks"))
from kill_sweep import THEN, kill_points, one_point, rows, run_args  # noqa: E402
from kill_sweep import LOOPBACK, run_train  # noqa: E402


def parsed(point: str) -> list[tuple[str, int, int]]:
    return [next(iter(faults.parse(fault))) for fault in point.split(THEN)]


def test_points_are_seeded_distinct_parse_and_cover_every_kind():
    points = kill_points(8, seed=3, steps=8, save_every=2, val_every=3)
    assert points == kill_points(8, seed=3, steps=8, save_every=2, val_every=3)
    assert points != kill_points(8, seed=4, steps=8, save_every=2, val_every=3)
    assert len(set(points)) == 8
    kinds = {parsed(p)[0][0] if THEN not in p else "double" for p in points[:4]}
    assert kinds == {"kill_after_step", "kill_in_save", "kill_in_val", "double"}
    for point in points:
        for what, step, rank in parsed(point):
            assert rank in (0, 1) and 1 <= step <= 8
            assert what != "kill_in_save" or step % 2 == 0  # kills in a save only where one happens
            assert what != "kill_in_val" or step % 3 == 0 or step == 8  # and in validation likewise


def test_a_double_kill_strikes_the_resumed_run_before_its_next_checkpoint():
    doubles = [p for p in kill_points(40, seed=0, steps=8, save_every=2, val_every=3) if THEN in p]
    assert doubles
    for point in doubles:
        (_, first, _), (_, second, _) = parsed(point)
        resumed_at = (first - 1) // 2 * 2  # the newest complete checkpoint after the first kill
        assert resumed_at < second <= resumed_at + 2


def test_every_point_is_reachable_and_no_more():
    # singles: after steps 1-3 (6), in the save at 2 (2), in validation at 2 and 4 (4): 12;
    # doubles: the 8 kills of steps 1-2 x the same 8, the 4 kills of steps 3-4 x the same 4: 80
    everything = kill_points(92, seed=0, steps=4, save_every=2, val_every=2)
    assert len(set(everything)) == 92
    with pytest.raises(ValueError, match="93: this run has 92 kill points"):
        kill_points(93, seed=0, steps=4, save_every=2, val_every=2)


@pytest.mark.slow
def test_a_kill_in_validation_then_a_second_kill_resume_bitwise(tmp_path):
    """2 ranks, ZeRO-2, the freeze phase change at step 3: killed in step 3's validation (rank 1),
    resumed from step 2, killed again after step 4 (rank 0) before its save, resumed again."""
    make_data_dir(tmp_path / "data", docs_per_shard=(30, 30), val_docs=(10,))
    args = run_args(steps=5, save_every=2, val_every=3)
    run_train(tmp_path, "train.run_name=reference", *args, nproc=2, env=LOOPBACK)
    reference = rows(tmp_path, "reference")
    point = f"kill_in_val:3:1{THEN}kill_after_step:4:0"
    assert point in kill_points(100, seed=0, steps=5, save_every=2, val_every=3)
    same, what = one_point(tmp_path, 0, point, args, reference)
    assert same, what
    assert what.startswith("resumed from step00000002"), what
