"""lm-evaluation-harness on trained runs: every score checked against log-softmax sums computed here
from the model's logits; the CLI's files and MLflow metrics; evaluation during training and resume."""
import json

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance

from data_prep.text_codec import load_codec
from pipeline import lm_eval as cli
from pipeline.eval.lm_adapter import GoldFinchLM
from pipeline.inference.run_loading import load

from eval_helpers import MC_ROWS, ROLL_ROWS, write_tasks
from pipeline_helpers import make_data_dir, metrics, run_train
from test_pipeline_generate import greedy_by_full_forward, small_model

TRACKED = ["tracking.enabled=true", "tracking.system_metrics_every=0.5", "train.save_every=2",
           "train.eval_tasks=[tiny_mc]", "train.eval_every=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run "ev": 2 steps evaluating tiny_mc at the end, then resumed to 4 (evaluating again), with
    MLflow on; run "plain": the same 4 steps in one go, no evaluation, no tracking."""
    root = tmp_path_factory.mktemp("lm_eval")
    make_data_dir(root / "data", docs_per_shard=(30,), val_docs=(4,))
    tasks = write_tasks(root / "tasks")
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    common = ["train.run_name=ev", *TRACKED, f"train.eval_include_path={tasks}", "train.export=false"]
    run_train(root, *common, "train.max_steps=2", env=env)
    run_train(root, *common, "train.max_steps=4", env=env)
    run_train(root, "train.run_name=plain", "train.max_steps=4", "train.export=false")
    return root, tasks


@pytest.fixture(scope="module")
def lm(trained):
    root, _ = trained
    loaded = load(root / "runs" / "ev")
    return GoldFinchLM(loaded.model, load_codec(str(root / "data")), batch_size=3)


def req(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def logprobs(model, ids):
    """log-softmax over a single full forward of ids [T] -> [T, V] (position t predicts t+1)."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    return F.log_softmax(logits[0].float(), dim=-1)


def expected_pair(lm, context, continuation):
    """(sum of log p(continuation | context), greedy) computed here: the continuation's tokens are
    whatever the whole text has after the context's own tokens."""
    tok = lm.tok
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    ctx = tok.encode(stripped) if stripped else [tok.eot_id]
    whole = tok.encode(stripped + continuation)
    cont = whole[len(ctx):] if stripped and whole[:len(ctx)] == ctx else tok.encode(continuation)
    lp = logprobs(lm.model, ctx + cont)[len(ctx) - 1:-1]
    target = torch.tensor(cont)
    return (float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))


def mc_requests():
    return [req("loglikelihood", row["q"], c) for row in MC_ROWS for c in row["choices"]]


def test_loglikelihood_matches_logits_and_reuse_matches_no_reuse(lm):
    requests = mc_requests() + [req("loglikelihood", "", "name3 = value21"),
                                req("loglikelihood", "name5 = ", "value35 + 5")]
    lm.stats.clear()
    got = lm.loglikelihood(requests)
    shared = dict(lm.stats)
    for r, (ll, greedy) in zip(requests, got):
        want_ll, want_greedy = expected_pair(lm, *r.args)
        assert ll == pytest.approx(want_ll, abs=1e-4), r.args
        assert greedy == want_greedy
    apart = GoldFinchLM(lm.model, lm.tok, batch_size=3, share_context=False)
    for (a, ga), (b, gb) in zip(got, apart.loglikelihood(requests)):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb
    assert shared["context_tokens"] * 2 < apart.stats["context_tokens"]  # 3 choices per context


@pytest.mark.parametrize("arch", ["goldfinch", "finch", "llama"])
def test_loglikelihood_every_arch(arch):
    """Batched continuations from selected state rows, for each kind of state."""
    model = small_model(arch)
    ids = [[5, 9, 13], [5, 9, 13, 2], [7]]
    conts = [[17, 4], [8], [3, 3, 3, 9]]

    class Ids:
        eot_id = 0
    lm = GoldFinchLM(model, Ids(), batch_size=2)
    got = lm._loglikelihood_tokens([((None, None), c, t) for c, t in zip(ids, conts)])
    for ctx, cont, (ll, _) in zip(ids, conts, got):
        lp = logprobs(model, ctx + cont)[len(ctx) - 1:-1]
        assert ll == pytest.approx(float(lp.gather(1, torch.tensor(cont)[:, None]).sum()), abs=1e-4)


def test_rolling_carries_state_across_windows(lm):
    requests = [req("loglikelihood_rolling", row["text"]) for row in ROLL_ROWS]
    lm.stats.clear()
    got = lm.loglikelihood_rolling(requests)
    longest = max(len(lm.tok.encode(row["text"])) for row in ROLL_ROWS)
    assert longest > 2 * lm.model.cfg.ctx_len  # three windows
    for r, ll in zip(requests, got):
        ids = [lm.tok.eot_id] + lm.tok.encode(r.args[0])
        lp = logprobs(lm.model, ids)[:-1]
        assert ll == pytest.approx(float(lp.gather(1, torch.tensor(ids[1:])[:, None]).sum()), abs=1e-4)


def test_generate_until_is_greedy_and_stops(lm):
    """Stops at a stop sequence (cut before it), at max_gen_toks, and at <|endoftext|>."""
    tok = lm.tok
    candidates = [tok.decode([1 + (start + stride * k) % 250 for k in range(6)])
                  for start in (10, 40, 100) for stride in (1, 2, 3)]
    runs = {c: greedy_by_full_forward(lm.model, tok.encode(c), 12) for c in candidates}
    context = next(c for c, ids in runs.items() if tok.eot_id not in ids)
    greedy = runs[context]
    full = tok.decode(greedy)
    stop = tok.decode(greedy[3:5])
    assert stop and full.find(stop) > 0
    ending = next((c for c, ids in runs.items() if ids[0] == tok.eot_id), None)
    requests = [req("generate_until", context, {"until": [stop], "max_gen_toks": 12}),
                req("generate_until", context, {"until": [], "max_gen_toks": 4})]
    out = lm.generate_until(requests + ([req("generate_until", ending, {"until": ["\n"]})]
                                        if ending else []))
    assert out[0] == full.split(stop)[0]
    assert out[1] == tok.decode(greedy[:4])
    assert out[2:] == ([""] if ending else [])


def test_context_boundary_rwkv_world_and_bpe(lm):
    """Context tokens decode to exactly the context, continuation tokens to exactly the rest,
    also where the tokenizer would merge across the boundary (RWKV World's longest match)."""
    from data_prep.rwkv_world import RwkvWorldCodec

    pairs = [("Hello wor", "ld"), ("Question: 2+2=", " 4"), ("The answer is ", "(b)"),
             ("name4 = value", "28 + 4"), ("x", "\n\nname2")]
    for tok in (RwkvWorldCodec(), lm.tok):
        adapter = GoldFinchLM(lm.model, tok)
        for context, continuation in pairs:
            ctx, cont = adapter._encode_pair(context, continuation)
            moved = len(context) - len(context.rstrip())
            assert tok.decode(ctx) == context.rstrip()
            assert tok.decode(cont) == context[len(context) - moved:] + continuation


def test_cli_scores_files_and_mlflow(trained, lm, capsys):
    from mlflow import MlflowClient

    root, tasks = trained
    run = root / "runs" / "ev"
    rc = cli.main(["--run", str(run), "--step", "2", "--tasks", "tiny_mc,tiny_roll,tiny_gen",
                   "--include-path", str(tasks), "--batch-size", "4", "--bootstrap-iters", "0"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["results"]["tiny_mc"]["acc,none"] <= 1.0
    assert out["results"]["tiny_roll"]["word_perplexity,none"] > 1.0
    assert "exact_match,none" in out["results"]["tiny_gen"]
    saved = json.loads((run / "eval" / "step-2.json").read_text())
    assert saved["results"]["tiny_mc"] == out["results"]["tiny_mc"] and saved["step"] == 2

    # the choices agree with log-likelihoods of the step-2 weights computed here
    step2 = GoldFinchLM(load(run, step=2).model, lm.tok)
    samples = [json.loads(line) for line in (run / "eval" / "step-2-samples.jsonl").read_text().splitlines()]
    mc = [s for s in samples if s["task"] == "tiny_mc"]
    assert len(mc) == len(MC_ROWS)
    for s in mc:
        row = MC_ROWS[s["doc_id"]]
        want = [expected_pair(step2, row["q"], " " + c)[0] for c in row["choices"]]  # " ": the
        # task's target_delimiter (lm-eval's default)
        got = [r[0][0] for r in s["resps"]]
        assert got == pytest.approx(want, abs=1e-4)
        assert s["acc"] == float(max(range(3), key=lambda i: want[i]) == row["label"])

    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id").read_text().strip()
    assert [m.step for m in client.get_metric_history(run_id, "eval/tiny_roll/word_perplexity")] == [2]
    assert [m.step for m in client.get_metric_history(run_id, "eval/tiny_gen/exact_match")] == [2]
    assert not [k for k in client.get_run(run_id).data.metrics if k.endswith("sample_len")]
    artifacts = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/step-2.json", "eval/step-2-samples.jsonl", "eval/step-4.json"} <= artifacts


def test_eval_during_training_resume_and_dashboard(trained):
    from mlflow import MlflowClient

    root, _ = trained
    assert [r["loss"] for r in metrics(root, "ev")] == [r["loss"] for r in metrics(root, "plain")]
    run = root / "runs" / "ev"
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(run_id, "eval/tiny_mc/acc")
    # the first invocation and the resumed one; the CLI test may have scored step 2 again, equally
    assert {m.step for m in history} == {2, 4}
    for m in history:
        summary = json.loads((run / "eval" / f"step-{m.step}.json").read_text())
        assert m.value == pytest.approx(summary["results"]["tiny_mc"]["acc,none"])
    mlrun = client.get_run(run_id)
    assert any(k.startswith("system/cpu_utilization") for k in mlrun.data.metrics)
    assert any(k.startswith("system/system_memory_usage") for k in mlrun.data.metrics)
    experiment = client.get_experiment(mlrun.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_cli_errors(trained, capsys):
    root, tasks = trained
    run = str(root / "runs" / "ev")
    assert cli.main(["--run", run, "--tasks", "tiny_mc", "--include-path", str(root / "none")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert cli.main(["--run", run, "--tasks", "tiny_mc", "--batch-size", "0"]) == 2
    assert cli.main(["--run", run, "--step", "3", "--tasks", "tiny_mc"]) == 2
    assert "not a complete checkpoint" in capsys.readouterr().err


def test_cli_on_an_exported_model(trained, tmp_path, capsys):
    """--model: an export dir (what model.convert also writes); results beside it, no MLflow."""
    from pipeline.export import export

    root, tasks = trained
    out = export(root / "runs" / "ev", tmp_path / "export")
    capsys.readouterr()  # DeepSpeed's consolidation reports on stdout
    assert cli.main(["--model", str(out), "--tasks", "tiny_mc", "--include-path", str(tasks),
                     "--limit", "4", "--bootstrap-iters", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["results"]["tiny_mc"]["sample_len"] == 4 and "mlflow_run_id" not in printed
    assert json.loads((out / "eval" / "export.json").read_text())["step"] is None


def test_make_eval_passes_args_through():
    import subprocess

    from pipeline_helpers import ROOT

    proc = subprocess.run(["make", "-n", "--no-print-directory", "eval",
                           "ARGS=--run runs/x --tasks piqa,arc_easy --limit 10"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "-m pipeline.lm_eval --run runs/x --tasks piqa,arc_easy --limit 10" in proc.stdout


def test_eval_during_training_config_is_checked():
    from pipeline.config import load_run_config

    with pytest.raises(ValueError, match="needs train.eval_tasks"):
        load_run_config(None, ["train.eval_every=5"])
    with pytest.raises(ValueError, match="ZeRO-3"):
        load_run_config(None, ["train.eval_every=5", "train.eval_tasks=[piqa]", "train.zero_stage=3"])
    cfg = load_run_config(None, ["train.eval_every=5", "train.eval_tasks=[piqa,arc_easy]"])
    assert cfg.train.eval_tasks == ["piqa", "arc_easy"] and load_run_config().train.eval_every == 0
