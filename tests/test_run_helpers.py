"""The suite's ways of running the trainer (tests/pipeline_helpers.py run_train) compute what the
command computes: inside the test process, as ranks forked from it, and the command itself log
the same losses, bit for bit; a run inside the process leaves it as it found it."""
import os

import torch

import in_process
from kernels import default_wkv_backend
from pipeline_helpers import metrics, run_train

ARGS = ("train.max_steps=5", "train.zero_stage=0", "train.export=false")  # as conftest plain_run(0)


def losses(root, run):
    return [r["loss"] for r in metrics(root, run)]


def test_the_command_and_forked_ranks_log_the_in_process_losses(shared_data, plain_run):
    run_train(shared_data, "train.run_name=helpers-command", *ARGS, command=True)
    # a fault that never fires still makes the run a process of its own
    assert in_process.kills({"GOLDFINCH_FAULTS": "kill_after_step:99"})
    run_train(shared_data, "train.run_name=helpers-forked", *ARGS, env={"GOLDFINCH_FAULTS": "kill_after_step:99"})
    assert losses(shared_data, "helpers-command") == plain_run(0)
    assert losses(shared_data, "helpers-forked") == plain_run(0)


def test_a_run_in_the_process_leaves_it_as_it_found_it(shared_data):
    env, threads, rng = dict(os.environ), torch.get_num_threads(), torch.get_rng_state()
    backend = default_wkv_backend()
    proc = run_train(shared_data, "train.run_name=helpers-clean", "train.max_steps=2", "train.wkv_backend=naive",
                     "train.export=false", env={"GOLDFINCH_BATCH_LOG": str(shared_data / "batches" / "clean")})
    assert proc.returncode == 0 and (shared_data / "batches" / "clean").is_dir()
    assert dict(os.environ) == env and torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng) and default_wkv_backend() == backend
    assert not torch.distributed.is_initialized()


def test_a_failing_run_in_the_process_reports_like_the_command(shared_data):
    proc = run_train(shared_data, "train.run_name=helpers-bad", "train.max_steps=2", "data.nope=1", check=False)
    assert proc.returncode == 2 and "data.nope" in proc.stderr and proc.stdout == ""
