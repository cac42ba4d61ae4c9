"""Exact resume after kill -9 (also mid-checkpoint), MLflow run continuity, and fault handling."""
import json
import signal
import subprocess
import sys
import time

import pytest

from pipeline_helpers import ENV, TINY, make_data_dir, metrics, run_train

STEPS = ["train.max_steps=10", "train.save_every=3", "train.keep_last=5", "train.export=false"]


@pytest.fixture
def data(tmp_path):
    make_data_dir(tmp_path / "data", docs_per_shard=(30, 30), val_docs=(10,))
    return tmp_path


def losses(tmp_path, run):
    return [(r["step"], r["loss"]) for r in metrics(tmp_path, run)]


def mlflow_history(tmp_path, run, key="loss"):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run_id = (tmp_path / "runs" / run / "mlflow_run_id").read_text().strip()
    return client.get_run(run_id), sorted(m.step for m in client.get_metric_history(run_id, key))



@pytest.mark.slow
def test_two_rank_zero2_resumes_exactly_after_kills_and_keeps_one_mlflow_run(data):
    two = dict(nproc=2)
    run_train(data, "train.run_name=whole", "train.zero_stage=2", *STEPS, **two)
    for fault in ("kill_after_step:5", "kill_in_save:6:1"):
        proc = run_train(data, "train.run_name=cut", "train.zero_stage=2", *STEPS, check=False,
                         env={"GOLDFINCH_FAULTS": fault}, **two)
        assert proc.returncode != 0, f"the fault {fault} did not stop the run"
    ckpts = data / "runs" / "cut" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step00000003"
    assert not (ckpts / "step00000006" / "COMPLETE").exists()  # killed mid-save: never complete
    proc = run_train(data, "train.run_name=cut", "train.zero_stage=2", *STEPS, **two)
    assert "resumed from step00000003 at step 3" in proc.stdout + proc.stderr
    assert losses(data, "cut") == losses(data, "whole")  # bitwise, every step
    run, steps = mlflow_history(data, "cut")
    assert run.info.status == "FINISHED"
    assert steps == list(range(1, 11))  # no gap, no duplicate


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 3])
def test_resume_is_exact_for_zero_stage(data, stage):
    run_train(data, "train.run_name=whole", f"train.zero_stage={stage}", *STEPS)
    proc = run_train(data, "train.run_name=cut", f"train.zero_stage={stage}", *STEPS, check=False,
                     env={"GOLDFINCH_FAULTS": "kill_after_step:8"})
    assert proc.returncode != 0
    run_train(data, "train.run_name=cut", f"train.zero_stage={stage}", *STEPS)
    assert losses(data, "cut") == losses(data, "whole")


@pytest.mark.slow
def test_torn_newest_checkpoint_falls_back_to_the_one_before(data):
    run_train(data, "train.run_name=whole", *STEPS)
    proc = run_train(data, "train.run_name=cut", *STEPS, check=False,
                     env={"GOLDFINCH_FAULTS": "kill_after_step:7"})
    assert proc.returncode != 0
    ckpts = data / "runs" / "cut" / "checkpoints"
    optim = next((ckpts / "step00000006").glob("*optim_states.pt"))
    optim.write_bytes(optim.read_bytes()[:100])  # torn: COMPLETE is there, the bytes are not
    proc = run_train(data, "train.run_name=cut", *STEPS)
    assert "step00000006 is unusable" in proc.stderr and "resumed from step00000003" in proc.stdout
    assert losses(data, "cut") == losses(data, "whole")


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
@pytest.mark.parametrize("stage", [0, 2])
def test_non_finite_steps_are_skipped_and_counted(data, stage):
    run_train(data, "train.run_name=nan", f"train.zero_stage={stage}", *STEPS,
              env={"GOLDFINCH_FAULTS": "nan_loss:4,nan_loss:5"})
    rows = metrics(data, "nan")
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert rows[3]["loss"] is None and rows[4]["loss"] is None
    assert [r["skipped_steps"] for r in rows] == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2]
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
def test_disk_full_while_saving_keeps_the_previous_checkpoint(data):
    proc = run_train(data, "train.run_name=full", *STEPS, check=False,
                     env={"GOLDFINCH_FAULTS": "enospc_in_save:6"})
    assert proc.returncode == 1
    assert "no space left on device" in proc.stderr and "step00000003" in proc.stderr
    ckpts = data / "runs" / "full" / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step00000003"
    assert not (ckpts / "step00000006").exists()
    run_train(data, "train.run_name=full", *STEPS)  # space back: it resumes and finishes
    assert metrics(data, "full")[-1]["step"] == 10


@pytest.mark.slow
def test_unreachable_tracking_server_warns_once_and_training_completes(data):
    proc = run_train(data, "train.run_name=offline", "train.max_steps=3", "train.export=false",
                     "tracking.uri=http://127.0.0.1:9", env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                                                             "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    assert proc.stderr.count("training goes on without tracking") == 1
    assert [r["step"] for r in metrics(data, "offline")] == [1, 2, 3]


@pytest.mark.slow
def test_resuming_with_another_world_size_is_refused(data):
    run_train(data, "train.run_name=w2", "train.zero_stage=2", "train.max_steps=3", "train.export=false",
              nproc=2)
    before = (data / "runs" / "w2" / "metrics.jsonl").read_text()
    proc = run_train(data, "train.run_name=w2", "train.zero_stage=2", "train.max_steps=6",
                     "train.export=false", check=False)
    assert proc.returncode == 1
    assert "saved by 2 ranks, this run has 1" in proc.stderr and "Traceback" not in proc.stderr
    assert (data / "runs" / "w2" / "metrics.jsonl").read_text() == before
    assert (data / "runs" / "w2" / "checkpoints" / "latest").read_text().strip() == "step00000003"
