"""Evaluation: deterministic, equal to the trainer's own val_loss, from checkpoints or exports."""
import json
import math
import subprocess
import sys

import pytest

from pipeline import evaluate as ev
from pipeline.export import export

from pipeline_helpers import ENV, ROOT, make_data_dir, metrics, run_train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run: checkpoints at steps 3 and 6, the trainer's validation at step 6."""
    root = tmp_path_factory.mktemp("eval")
    make_data_dir(root / "data", docs_per_shard=(40,), val_docs=(10,))
    run_train(root, "train.run_name=r", "train.max_steps=6", "train.save_every=3",
              "train.val_every=6", "train.val_batches=3", "tracking.enabled=true")
    return root


def reference_loss(model_dir, data_dir, batches: int, global_batch: int) -> float:
    """The validation loss computed here, independently of pipeline.evaluate: plain
    cross-entropy over every target token of the first batches x global_batch val windows."""
    import torch
    import torch.nn.functional as F

    from model import load_exported
    from pipeline.data.data_loader import DataDir
    from pipeline.data.val_windows import ValWindows

    model = load_exported(model_dir).eval()
    count = batches * global_batch
    val = ValWindows(DataDir.open(data_dir), model.cfg.ctx_len, count)
    windows = torch.from_numpy(val.tokens(range(count)))
    with torch.no_grad():
        logits, _ = model(windows[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)).item()


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluate", *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    return proc


@pytest.mark.slow
def test_same_number_twice_and_equal_to_the_trainers_val_loss(trained):
    run = trained / "runs" / "r"
    first, second = cli("--run", run), cli("--run", run)
    assert first.returncode == 0, first.stderr[-2000:]
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["loss"] == b["loss"]
    trainer = [r["val_loss"] for r in metrics(trained, "r") if "val_loss" in r]
    assert a["loss"] == pytest.approx(trainer[-1], rel=1e-5)
    assert a["perplexity"] == pytest.approx(math.exp(a["loss"]))
    assert (a["step"], a["batches"], a["micro_batch"], a["tokens"]) == (6, 3, 4, 3 * 4 * 32)
    assert (a["windows"], a["global_batch"]) == (12, 4)
    assert a["data"] == str(trained / "data")


@pytest.mark.slow
def test_step_export_other_data_and_mlflow(trained, tmp_path, capsys):
    run = trained / "runs" / "r"
    assert ev.main(["--run", str(run)]) == 0
    latest = json.loads(capsys.readouterr().out)
    assert ev.main(["--run", str(run), "--step", "3"]) == 0
    early = json.loads(capsys.readouterr().out)
    step3 = export(run, tmp_path / "step3", 3)
    capsys.readouterr()  # DeepSpeed's consolidation chatter
    assert early["step"] == 3
    assert early["loss"] == pytest.approx(reference_loss(step3, trained / "data", 3, 4), rel=1e-6)
    assert early["loss"] > latest["loss"] + 0.05  # step 3 is before three more steps of learning
    # the run's export holds the step-6 weights; its run config supplies the data dir
    assert ev.main(["--model", str(run / "export")]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(latest["loss"], rel=1e-6)
    # any other built data dir, and more batches
    make_data_dir(tmp_path / "other", docs_per_shard=(3,), val_docs=(12,), seed=9)
    assert ev.main(["--run", str(run), "--data", str(tmp_path / "other"), "--batches", "5"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["batches"] == 5 and other["data"] == str(tmp_path / "other")
    assert other["loss"] == pytest.approx(reference_loss(run / "export", tmp_path / "other", 5, 4), rel=1e-6)

    assert ev.main(["--run", str(run), "--log-mlflow"]) == 0
    logged = json.loads(capsys.readouterr().out)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{trained / 'mlruns' / 'mlflow.db'}")
    history = client.get_metric_history(logged["mlflow_run_id"], "eval_loss")
    assert logged["mlflow_run_id"] == (run / "mlflow_run_id").read_text().strip()
    assert [(m.step, m.value) for m in history] == [(6, pytest.approx(latest["loss"]))]


@pytest.mark.slow
def test_bad_inputs_fail_clearly(trained, tmp_path, capsys):
    run = trained / "runs" / "r"
    standalone = tmp_path / "copy"
    standalone.mkdir()
    for name in ("model.safetensors", "config.json"):
        (standalone / name).write_bytes((run / "export" / name).read_bytes())
    cases = [
        (["--run", str(tmp_path / "nope")], str(tmp_path / "nope")),
        (["--run", str(run), "--step", "4"], "not a complete checkpoint"),
        (["--run", str(run), "--data", str(tmp_path / "nodata")], str(tmp_path / "nodata")),
        (["--run", str(run), "--batches", "0"], "--batches"),
        (["--model", str(standalone)], "--data"),
        (["--model", str(standalone), "--data", str(trained / "data"), "--log-mlflow"], "--run"),
    ]
    for argv, needle in cases:
        assert ev.main(argv) == 2, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]  # after any loading chatter
        assert last.startswith("pipeline.evaluate: ") and needle in last, (argv, last)
    assert ev.main(["--model", str(standalone), "--data", str(trained / "data")]) == 0
    assert json.loads(capsys.readouterr().out)["step"] is None
    proc = cli("--run", tmp_path / "nope")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
