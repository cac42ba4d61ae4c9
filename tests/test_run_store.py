"""The run store's marker and tags, and the train state's round trip, on files alone (no training)."""
import json

import pytest

from pipeline import runs
from pipeline.training.train_state import CLIENT_KEY, TrainState


def complete(ckpt_dir, step: int, **fields):
    tag_dir = ckpt_dir / runs.tag_for(step)
    tag_dir.mkdir(parents=True)
    runs.rank_state_file(tag_dir, 0).write_bytes(b"x" * 4)
    (tag_dir / runs.COMPLETE).write_text(json.dumps({"step": step, "files": {"rank0.pt": 4}, **fields}))
    return tag_dir


def test_marker_describes_itself_and_keeps_added_fields(tmp_path):
    marker = runs.Marker(7, {"rank0.pt": 4}, model={"arch": "finch", "n_layer": 2}, zero_stage=2,
                         world_size=3, tokenizer_sha256="ab" * 32, extra={"peft_base_sha256": "cd"})
    runs.write_marker(tmp_path, marker)
    back = runs.read_marker(tmp_path)
    assert back == marker
    assert runs.saved_world(tmp_path) == 3  # from the marker, not the one rank file
    assert runs.recorded_tokenizer(tmp_path) == "ab" * 32
    assert back.model_config().arch == "finch" and back.model_config().n_layer == 2


def test_old_marker_reads_with_fallbacks(tmp_path):
    tag_dir = complete(tmp_path, 3)  # step and files only, as before the marker described itself
    marker = runs.read_marker(tag_dir)
    assert (marker.step, marker.model, marker.zero_stage, marker.extra) == (3, None, None, {})
    assert runs.saved_world(tag_dir) == 1 and runs.recorded_tokenizer(tag_dir) is None
    assert runs.verify(tag_dir) is None
    (tag_dir / "rank0.pt").write_bytes(b"x")
    assert "rank0.pt has 1 bytes" in runs.verify(tag_dir)


def test_resolve_tag_newest_whole_or_named_step(tmp_path):
    run_dir = tmp_path / "run"
    ckpts = runs.checkpoints_of(run_dir)
    complete(ckpts, 3)
    complete(ckpts, 6)
    (ckpts / runs.tag_for(9)).mkdir()  # killed before its marker
    assert runs.resolve_tag(run_dir, None) == ("step00000006", 6)
    assert runs.resolve_tag(run_dir, 3) == ("step00000003", 3)
    with pytest.raises(FileNotFoundError, match="step00000009 is not a complete checkpoint"):
        runs.resolve_tag(run_dir, 9)
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        runs.open_checkpoint(run_dir)


def test_train_state_round_trip_and_old_counter_dicts():
    state = TrainState(step=4, tokens=512, skipped_steps=1, phase=2)
    assert TrainState.from_client_state(state.client_state(), phase=0) == state
    assert set(state.client_state()) == {CLIENT_KEY}
    old = {"step": 4, "tokens": 512}  # before skipped steps and the phase were saved
    assert TrainState.from_client_state(old, phase=1) == TrainState(4, 512, 0, 1)
    state.advance(128, applied=False)
    assert (state.step, state.tokens, state.skipped_steps) == (5, 640, 2)
