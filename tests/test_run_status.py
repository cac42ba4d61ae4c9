"""A run's MLflow run never stays RUNNING after the process ends: FAILED after a crash or a user
error once the run is open, KILLED after SIGTERM/SIGINT, and a resume reopens the same run as
RUNNING. In-process: the trainer's `main()`, with the end of the run made to fail on purpose."""
import os
import signal

import pytest

from pipeline import train as trainer
from pipeline.records import run_status
from pipeline.records.tracking import Tracker, TrackingConfig

from launch_helpers import free_port
from pipeline_helpers import TINY, make_data_dir


def client(tmp_path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def test_status_after_an_exception():
    assert run_status.status_after(run_status.Terminated(signal.SIGTERM)) == "KILLED"
    assert run_status.status_after(KeyboardInterrupt()) == "KILLED"
    assert run_status.status_after(RuntimeError("boom")) == "FAILED"


def test_sigterm_raises_while_installed_and_not_after():
    before = signal.getsignal(signal.SIGTERM)
    sigterm = run_status.SigtermRaises()
    with pytest.raises(run_status.Terminated) as caught:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
    assert caught.value.signum == signal.SIGTERM
    sigterm.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_first_end_counts_and_a_resume_reopens_the_run(tmp_path):
    cfg = TrackingConfig(dir=str(tmp_path / "mlruns"), system_metrics_every=0)
    (tmp_path / "run").mkdir()
    first = Tracker(cfg, tmp_path / "run", enabled=True)
    first.start("r", {"a": 1}, {})
    first.finish("KILLED")
    first.finish("FINISHED")  # already ended: changes nothing
    assert client(tmp_path).get_run(first.run_id).info.status == "KILLED"
    again = Tracker(cfg, tmp_path / "run", enabled=True)
    again.start("r", {"a": 1}, {})
    assert again.run_id == first.run_id
    assert client(tmp_path).get_run(first.run_id).info.status == "RUNNING"


@pytest.fixture
def one_process(monkeypatch):
    """The environment init_distributed fills in for a lone process, restored afterwards."""
    for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LOCAL_SIZE", raising=False)


@pytest.mark.slow
def test_the_trainer_ends_its_mlflow_run_honestly(tmp_path, monkeypatch, one_process):
    make_data_dir(tmp_path / "data", docs_per_shard=(40,), val_docs=(10,))
    args = [*TINY, f"data.path={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'runs'}",
            f"tracking.dir={tmp_path / 'mlruns'}", "tracking.enabled=true", "tracking.system_metrics_every=0",
            "train.run_name=st", "train.max_steps=2", "train.export=false", "train.max_bad_steps=1"]
    run_id = lambda: (tmp_path / "runs" / "st" / "mlflow_run_id").read_text().strip()  # noqa: E731
    status = lambda: client(tmp_path).get_run(run_id()).info.status  # noqa: E731
    seen, real_finish = [], trainer.finish_run

    # a user error inside the step loop (every step non-finite)
    monkeypatch.setenv("GOLDFINCH_FAULTS", "nan_loss:1")
    assert trainer.main(args) == 1
    assert status() == "FAILED"
    monkeypatch.delenv("GOLDFINCH_FAULTS")
    first_id = run_id()

    # a crash after the steps (in the end-of-run export): reopened as RUNNING, then FAILED
    def crash(*_):
        seen.append(status())
        raise RuntimeError("the export broke")
    monkeypatch.setattr(trainer, "finish_run", crash)
    with pytest.raises(RuntimeError, match="the export broke"):
        trainer.main(args)
    assert seen == ["RUNNING"] and status() == "FAILED"

    # SIGTERM outside the step loop: KILLED, exit status 128 + 15
    def terminated(*_):
        seen.append(status())
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(trainer, "finish_run", terminated)
    assert trainer.main(args) == 128 + signal.SIGTERM
    assert seen[-1] == "RUNNING" and status() == "KILLED"

    monkeypatch.setattr(trainer, "finish_run", real_finish)
    assert trainer.main(args) == 0
    assert status() == "FINISHED" and run_id() == first_id
