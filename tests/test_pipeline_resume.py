"""Exact resume after kill -9 (also mid-checkpoint, also on another number of ranks), MLflow run
continuity, and fault handling.

The tests share one data dir and the uninterrupted reference runs (`whole`), each run once per
ZeRO stage; every test writes its own run names."""
import errno
import json
import signal
import subprocess
import sys
import time

import pytest

from pipeline.training import checkpointing
from pipeline import runs
from pipeline import train as trainer
from pipeline.instruments.batch_log import ENV as BATCH_LOG, read_steps

from pipeline_helpers import ENV, TINY, make_data_dir, metrics, run_train

STEPS = ["train.max_steps=10", "train.save_every=3", "train.keep_last=5", "train.export=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    make_data_dir(root / "data", docs_per_shard=(30, 30), val_docs=(10,))
    return root


@pytest.fixture(scope="module")
def whole(data):
    """Losses of the uninterrupted single-rank run for a ZeRO stage (run on first use)."""
    done = {}

    def get(stage: int):
        if stage not in done:
            run_train(data, f"train.run_name=whole{stage}", f"train.zero_stage={stage}", *STEPS)
            done[stage] = losses(data, f"whole{stage}")
        return done[stage]
    return get


@pytest.fixture(scope="module")
def whole2r(data):
    """The uninterrupted 2-rank ZeRO-2 run (run name whole2r, global batches of 8 windows), once
    for the module; the windows it trained on are in batches/whole2r."""
    run_train(data, "train.run_name=whole2r", "train.zero_stage=2", "train.global_batch=8", *STEPS, nproc=2,
              env={BATCH_LOG: str(data / "batches" / "whole2r")})


def losses(tmp_path, run):
    return [(r["step"], r["loss"]) for r in metrics(tmp_path, run)]


def mlflow_history(tmp_path, run, key="loss"):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run_id = (tmp_path / "runs" / run / "mlflow_run_id").read_text().strip()
    return client.get_run(run_id), sorted(m.step for m in client.get_metric_history(run_id, key))



@pytest.mark.slow
def test_two_rank_zero2_resumes_exactly_after_kills_and_keeps_one_mlflow_run(data, whole2r):
    two = dict(nproc=2)
    args = ["train.zero_stage=2", "tracking.enabled=true", *STEPS]
    for fault in ("kill_after_step:5", "kill_in_save:6:1"):
        proc = run_train(data, "train.run_name=cut2r", *args, check=False,
                         env={"GOLDFINCH_FAULTS": fault}, **two)
        assert proc.returncode != 0, f"the fault {fault} did not stop the run"
    ckpts = data / "runs" / "cut2r" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step00000003"
    assert not (ckpts / "step00000006" / "COMPLETE").exists()  # killed mid-save: never complete
    proc = run_train(data, "train.run_name=cut2r", *args, **two)
    assert "resumed from step00000003 at step 3" in proc.stdout + proc.stderr
    assert losses(data, "cut2r") == losses(data, "whole2r")  # bitwise, every step
    run, steps = mlflow_history(data, "cut2r")
    assert run.info.status == "FINISHED"
    assert steps == list(range(1, 11))  # no gap, no duplicate


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 3])
def test_resume_is_exact_for_zero_stage(data, whole, capsys, stage):
    run = f"cut{stage}"
    proc = run_train(data, f"train.run_name={run}", f"train.zero_stage={stage}", *STEPS, check=False,
                     env={"GOLDFINCH_FAULTS": "kill_after_step:8"})
    assert proc.returncode != 0
    log = data / "runs" / run / "metrics.jsonl"
    with log.open("a") as fh:
        fh.write('{"step": 9, "loss": 4.1')  # torn by a kill in the middle of a write
    proc = run_train(data, f"train.run_name={run}", f"train.zero_stage={stage}", *STEPS)
    assert "dropping its torn last line 9" in proc.stderr
    assert losses(data, run) == whole(stage)
    # the finished run under the same name with another model: refused, nothing touched
    before = {name: (data / "runs" / run / name).read_bytes() for name in ("metrics.jsonl", "config.yaml")}
    args = [*TINY, f"data.path={data / 'data'}", f"train.out_dir={data / 'runs'}", f"train.run_name={run}",
            f"train.zero_stage={stage}", *STEPS, "model.n_layer=2"]
    assert trainer.main(args) == 2
    err = capsys.readouterr().err
    assert "model.n_layer: 3 -> 2" in err and "train.run_name=<new name>" in err
    assert {name: (data / "runs" / run / name).read_bytes() for name in before} == before


@pytest.mark.slow
def test_torn_newest_checkpoint_falls_back_and_all_torn_is_refused(data, whole):
    proc = run_train(data, "train.run_name=torn", *STEPS, check=False,
                     env={"GOLDFINCH_FAULTS": "kill_after_step:7"})
    assert proc.returncode != 0
    ckpts = data / "runs" / "torn" / "checkpoints"
    optim = next((ckpts / "step00000006").glob("*optim_states.pt"))
    optim.write_bytes(optim.read_bytes()[:100])  # torn: COMPLETE is there, the bytes are not
    proc = run_train(data, "train.run_name=torn", *STEPS)
    assert "step00000006 is unusable" in proc.stderr and "resumed from step00000003" in proc.stdout
    assert losses(data, "torn") == whole(1)
    # every checkpoint torn: starting over would truncate the metrics; it stops instead
    tags = runs.complete_tags(ckpts)
    assert tags == ["step00000003", "step00000006", "step00000009", "step00000010"]
    for tag in tags:
        for optim in (ckpts / tag).glob("*optim_states.pt"):
            optim.write_bytes(optim.read_bytes()[:100])
    before = (data / "runs" / "torn" / "metrics.jsonl").read_bytes()
    proc = run_train(data, "train.run_name=torn", *STEPS[1:], "train.max_steps=12", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "none of the 4 complete checkpoint(s)" in proc.stderr and "train.resume=never" in proc.stderr
    assert (data / "runs" / "torn" / "metrics.jsonl").read_bytes() == before


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data):
    args = [*TINY, f"data.path={data / 'data'}", f"train.out_dir={data / 'runs'}",
            f"tracking.dir={data / 'mlruns'}", "train.run_name=pre", "train.max_steps=100000",
            "train.save_every=0", "train.export=false"]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.train", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = data / "runs" / "pre" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    last = metrics(data, "pre")[-1]["step"]
    assert 3 <= last < 100000
    ckpts = data / "runs" / "pre" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == f"step{last:08d}"
    assert json.loads((ckpts / f"step{last:08d}" / "COMPLETE").read_text())["step"] == last
    assert "stopped by signal" in out + err


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_non_finite_steps_are_skipped_and_counted(data, stage):
    run_train(data, f"train.run_name=nan{stage}", f"train.zero_stage={stage}", "train.max_steps=8",
              "train.save_every=0", "train.export=false", env={"GOLDFINCH_FAULTS": "nan_loss:4,nan_loss:5"})
    rows = metrics(data, f"nan{stage}")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[3]["loss"] is None and rows[4]["loss"] is None
    assert [r["skipped_steps"] for r in rows] == [0, 0, 0, 1, 2, 2, 2, 2]
    assert rows[3]["grad_norm"] is None and rows[5]["grad_norm"] is not None
    # the NaN gradients never reached the weights: training stays finite and goes on learning
    assert all(r["loss"] is not None for r in rows[5:]) and rows[-1]["loss"] < rows[0]["loss"]


@pytest.mark.slow
def test_too_many_bad_steps_in_a_row_stop_with_a_clear_message(data):
    proc = run_train(data, "train.run_name=bad", *STEPS, "train.max_bad_steps=2", check=False,
                     env={"GOLDFINCH_FAULTS": "nan_loss:7,nan_loss:8"})
    assert proc.returncode == 1
    assert "2 consecutive steps had a non-finite loss" in proc.stderr
    assert "Traceback" not in proc.stderr
    ckpts = data / "runs" / "bad" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step00000006"
    assert metrics(data, "bad")[-1]["step"] == 8


@pytest.mark.slow
def test_a_write_failing_on_one_rank_stops_every_rank_and_keeps_the_previous_checkpoint(data):
    """Rank 1's files are capped in size while writing step 6's checkpoint, so torch.save itself
    fails there (as on a full disk); both ranks stop with the same message."""
    args = ["train.run_name=full", "train.zero_stage=2", *STEPS]
    proc = run_train(data, *args, check=False, nproc=2, env={"GOLDFINCH_FAULTS": "disk_full_in_save:6:1"})
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("pipeline.train: saving checkpoint")]
    assert len(lines) == 2 and lines[0] == lines[1]  # both ranks, one line each
    assert "rank 1: RuntimeError" in lines[0] and "rank 0" not in lines[0]
    assert "step00000006" in lines[0] and "the previous checkpoint (step00000003) is intact" in lines[0]
    ckpts = data / "runs" / "full" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step00000003"
    assert not (ckpts / "step00000006").exists()
    run_train(data, *args, nproc=2)  # space back: it resumes and finishes
    assert metrics(data, "full")[-1]["step"] == 10


def test_a_full_disk_is_named_as_such():
    assert checkpointing._describe(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert checkpointing._describe(RuntimeError("write\nfailed")) == "RuntimeError: write failed"


@pytest.mark.slow
def test_unreachable_tracking_server_warns_once_and_training_completes(data):
    proc = run_train(data, "train.run_name=offline", "train.max_steps=3", "train.export=false",
                     "tracking.enabled=true", "tracking.uri=http://127.0.0.1:9", env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                                                             "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    assert proc.stderr.count("training goes on without tracking") == 1
    assert [r["step"] for r in metrics(data, "offline")] == [1, 2, 3]


def assert_close_losses(cut, whole, rel):
    assert [s for s, _ in cut] == [s for s, _ in whole]
    assert [loss for _, loss in cut] == pytest.approx([loss for _, loss in whole], rel=rel)


@pytest.mark.slow
def test_a_two_rank_run_killed_after_a_checkpoint_resumes_on_one_rank(data, whole2r):
    """kill -9 of a 2-rank ZeRO-2 run after step 5 (checkpoint at 3); the same command on one
    rank (2 accumulation steps) converts the checkpoint to DeepSpeed's universal form, loads it
    and trains on the windows the 2-rank run would have."""
    args = ["train.run_name=el21", "train.zero_stage=2", "train.global_batch=8", *STEPS]
    proc = run_train(data, *args, check=False, nproc=2, env={"GOLDFINCH_FAULTS": "kill_after_step:5"})
    assert proc.returncode != 0
    proc = run_train(data, *args, env={BATCH_LOG: str(data / "batches" / "el21")})
    assert "resumed from step00000003 at step 3" in proc.stdout + proc.stderr
    assert (data / "runs" / "el21" / "checkpoints" / "step00000003" / "universal" / "COMPLETE").is_file()
    assert_close_losses(losses(data, "el21"), losses(data, "whole2r"), rel=1e-3)
    resumed, whole = read_steps(data / "batches" / "el21"), read_steps(data / "batches" / "whole2r")
    # (the loader reads ahead of the trainer: steps past the last are logged too)
    assert min(resumed) == 4  # the resumed run read from the checkpoint's position on
    assert all(resumed[step] == whole[step] for step in range(4, 11))  # the same tokens, every step


@pytest.mark.slow
def test_a_one_rank_run_resumes_on_two_ranks_and_changes_freeze_phase_there(data):
    """1 -> 2 ranks from a checkpoint in freeze phase 0; the phase change at step 5 happens on
    the 2-rank engine loaded from the universal checkpoint."""
    args = ["train.zero_stage=2", "train.global_batch=8", "train.max_steps=6", "train.save_every=3",
            "train.export=false", "freeze.phases=[{until_step:4,train:[gold,head]},{train:[all]}]"]
    run_train(data, "train.run_name=phased1", *args, env={BATCH_LOG: str(data / "batches" / "phased1")})
    proc = run_train(data, "train.run_name=el12", *args, check=False,
                     env={"GOLDFINCH_FAULTS": "kill_after_step:4"})
    assert proc.returncode != 0
    proc = run_train(data, "train.run_name=el12", *args, nproc=2,
                     env={BATCH_LOG: str(data / "batches" / "el12")})
    assert "resumed from step00000003 at step 3" in proc.stdout + proc.stderr
    rows = metrics(data, "el12")
    assert [r["phase"] for r in rows] == [0, 0, 0, 0, 1, 1]
    assert_close_losses(losses(data, "el12"), losses(data, "phased1"), rel=1e-3)
    resumed, whole = read_steps(data / "batches" / "el12"), read_steps(data / "batches" / "phased1")
    assert min(resumed) == 4 and all(resumed[step] == whole[step] for step in range(4, 7))
