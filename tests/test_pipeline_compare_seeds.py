"""The comparison over several seeds: means, spread, and which gaps exceed it."""
import math

from pipeline import compare
from pipeline.eval.compare_report import aggregate, gap_notes, results_markdown


def run(arch, seed, val, train=None):
    return {"arch": arch, "seed": seed, "run": f"c-{arch}-s{seed}", "params": 1000, "tokens": 512,
            "val_loss": val, "final_train_loss": train or val + 0.1, "val_perplexity": math.exp(val),
            "val_tokens": 64, "trainer_val_loss": val + 0.01, "tokens_per_s": 100.0 + seed,
            "wall_s": 60.0, "cache_context": 64, "cache_bytes_per_token": 12.0,
            "fixed_state_bytes": 0, "train_loss_steps": 1,
            "curve": [(256, val + 0.5), (512, val)]}


LOSSES = {"goldfinch": [3.00, 3.02, 3.04], "finch": [3.01, 3.05, 3.03], "llama": [3.20, 3.25, 3.22]}


def runs():
    return [run(arch, 7 + i, loss) for arch, values in LOSSES.items() for i, loss in enumerate(values)]


def test_aggregate_gives_mean_and_spread_per_arch():
    rows = {r["arch"]: r for r in aggregate(runs(), list(LOSSES))}
    for arch, values in LOSSES.items():
        row, mean = rows[arch], sum(values) / 3
        assert math.isclose(row["val_loss"], mean)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # sample standard deviation
        assert math.isclose(row["val_loss_std"], std)
        assert (row["val_loss_min"], row["val_loss_max"]) == (min(values), max(values))
        assert row["val_loss_per_seed"] == values and row["seeds"] == [7, 8, 9]
        assert math.isclose(row["val_perplexity"], math.exp(mean))
        assert [round(loss, 6) for _, loss in row["curve"]] == [round(mean + 0.5, 6), round(mean, 6)]
        assert row["curve_band"][1] == (min(values), max(values))
        assert row["tokens_per_s"] == 108.0 and row["wall_s"] == 180.0  # median of 107, 108, 109


def test_gaps_are_judged_against_the_spread_over_seeds():
    notes = gap_notes(aggregate(runs(), list(LOSSES)))
    # goldfinch 3.00-3.04 and finch 3.01-3.05 overlap; finch and llama 3.20-3.25 do not
    assert "finch - goldfinch = +0.0100 nats, within the spread" in notes[0]
    assert "llama - finch = +0.1933 nats, exceeds the spread" in notes[1]


def test_report_names_seeds_and_verdict():
    rows = aggregate(runs(), list(LOSSES))
    cfg = {**vars(compare.CompareConfig(seeds=3, seed=7)), "date": "2026-01-02", "machine": "test box"}
    from pathlib import Path
    text = results_markdown({"config": cfg, "rows": rows, "param_spread": 0.0, "wall_s": 600},
                            Path("/tmp/img/compare.png"), Path("/tmp/RESULTS.md"))
    assert "| goldfinch | 1,000 | 512 | 3.1200 ± 0.0200 | 3.0200 ± 0.0200 |" in text
    assert "in the means, but not beyond the spread over seeds for every pair" in text
    assert "once per seed: 7, 8, 9" in text and "3 seeds" in text


def test_single_seed_keeps_one_run_per_arch_and_its_names():
    cfg = compare.load_config(None, ["seeds=1"])
    assert compare.run_name(cfg, "finch", 1337) == "compare-finch"
    several = compare.load_config(None, ["seeds=3", "seed=5"])
    assert compare.seed_list(several) == [5, 6, 7]
    assert compare.run_name(several, "finch", 6) == "compare-finch-s6"
    assert "train.seed=6" in compare.train_args(several, "finch", 6)
    row = aggregate([run("finch", 1, 3.5)], ["finch"])[0]
    assert row["val_loss"] == 3.5 and row["val_loss_std"] == 0.0 and "curve_band" not in row


def test_reproduce_line_repeats_the_arguments_given():
    from pipeline.eval.compare_report import reproduce_command

    assert reproduce_command(None) == "make compare"
    assert reproduce_command({"config": None, "overrides": ["steps=40", "seeds=2"], "steps_env": None}) \
        == 'make compare ARGS="steps=40 seeds=2"'
    assert reproduce_command({"config": "c.yaml", "overrides": [], "steps_env": "9"}) \
        == 'COMPARE_STEPS=9 make compare ARGS="--config c.yaml"'
