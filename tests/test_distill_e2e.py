"""Distillation end to end, on CPU: a transformer teacher (a tiny random Qwen2 built from a
transformers config, and a tiny Llama of ours trained here), its student from
`model.convert from-transformers`, then align -> KL through the trainer's freeze phases.

What is checked is what the method promises: the align stage changes nothing but the mixers,
KL(teacher || student) on the val windows falls to at most half its start and below a CE-only
student's after as many steps, and the teacher's files are never touched."""
import hashlib
import shutil

import pytest
import torch

from model import build_model
from model.convert import from_transformers
from model.exported import load_exported
from pipeline.data.data_loader import DataDir
from pipeline.data.val_windows import ValWindows
from pipeline.distill.measure import compare_with_teacher
from pipeline.distill.teacher import Teacher, describe
from pipeline.runs import consolidated_state_dict
from pipeline.training import freezing
from pipeline_helpers import make_data_dir, metrics, run_train

pytestmark = pytest.mark.slow
ALIGN, KL = 30, 60
SMALL_LORAS = ["mix_lora_rank=8", "decay_lora_rank=8"]  # the suite's TINY sizes (pipeline_helpers)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    make_data_dir(root / "data", docs_per_shard=(8, 8, 8, 8, 8), val_docs=(10,))
    return root


def digests(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file()}


def kl_to_teacher(model_dir, teacher_dir, root) -> float:
    teacher = Teacher(describe(teacher_dir), torch.device("cpu"), torch.float32)
    val = ValWindows(DataDir.open(root / "data"), 32, 16)
    return compare_with_teacher(load_exported(model_dir), teacher, val, 4)["kl_teacher_student"]


def distil(root, name, teacher, student, zero_stage=1):
    """align (mixers only) then kl (everything), each with its own lr schedule; a checkpoint at
    the phase boundary. Under ZeRO-3 the teacher is partitioned as well."""
    align, kl = ALIGN, KL
    run_train(root, f"train.run_name={name}", f"train.max_steps={align + kl}",
              f"train.zero_stage={zero_stage}",
              f"train.init_from={student}", f"distill.teacher={teacher}", "train.warmup_steps=0", f"train.save_every={align}",
              "train.keep_last=5",
              f"freeze.phases=[{{until_step:{align},train:[mixers],loss:align,lr:1e-3,lr_final:1e-5}},"
              "{train:[all],loss:kl,lr:1e-3,lr_final:1e-4}]")
    return root / "runs" / name


def ce_only(root, name, student, steps):
    run_train(root, f"train.run_name={name}", f"train.max_steps={steps}", f"train.init_from={student}",
              "train.warmup_steps=0", "train.lr=1e-3", "train.lr_final=1e-4")
    return root / "runs" / name


def assert_align_changed_only_mixers(run, student, zero_stage=1):
    start = load_exported(student)
    init = start.state_dict()
    mixers = freezing.select(start, "mixers")
    after = consolidated_state_dict(run / "checkpoints", f"step{ALIGN:08d}", zero_stage)
    frozen = [n for n, _ in start.named_parameters() if n not in mixers]
    assert frozen and all(torch.equal(after[n], init[n].float()) for n in frozen)
    assert sum(not torch.equal(after[n], init[n].float()) for n in mixers) > len(mixers) // 2


def test_a_random_qwen2_distils_into_goldfinch_under_zero3(root):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=300, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=3, intermediate_size=128, max_position_embeddings=256,
                         tie_word_embeddings=True)
    teacher = root / "qwen2"
    Qwen2ForCausalLM(config).save_pretrained(teacher)
    shutil.copy(root / "data" / "tokenizer.json", teacher / "tokenizer.json")
    before = digests(teacher)
    student = root / "qwen2-student"
    from_transformers(teacher, student, ["arch=goldfinch", "ctx_len=32", *SMALL_LORAS])
    start = kl_to_teacher(student, teacher, root)

    run = distil(root, "qwen2-distil", teacher, student, zero_stage=3)
    rows = metrics(root, "qwen2-distil")
    assert {"align", "align/0", "align/1", "align/2"} <= rows[0].keys() and "kl" in rows[-1]
    assert rows[ALIGN - 1]["align"] < rows[0]["align"]
    assert_align_changed_only_mixers(run, student, zero_stage=3)
    distilled = kl_to_teacher(run / "export", teacher, root)
    baseline = kl_to_teacher(ce_only(root, "qwen2-ce", student, ALIGN + KL) / "export", teacher, root)
    assert distilled <= 0.5 * start, (start, distilled)
    assert distilled < baseline, (distilled, baseline)
    assert digests(teacher) == before


def test_our_llama_teacher_distils_into_an_all_recurrent_rwkv7(root):
    """The ARWKV/RADLADS baseline student (every block recurrent), from a Llama of ours trained
    on the data first; pipeline.evaluate --teacher reports the same KL."""
    import json

    from pipeline import evaluate

    run_train(root, "train.run_name=llama-teacher", "train.max_steps=40", "model.arch=llama",
              "train.lr=3e-3")
    teacher = root / "runs" / "llama-teacher" / "export"
    before = digests(teacher)
    student = root / "llama-student"
    from_transformers(teacher, student, ["arch=rwkv7", "ctx_len=32", *SMALL_LORAS])
    start = kl_to_teacher(student, teacher, root)
    run = distil(root, "llama-distil", teacher, student)
    assert_align_changed_only_mixers(run, student)
    distilled = kl_to_teacher(run / "export", teacher, root)
    assert distilled <= 0.5 * start, (start, distilled)
    assert digests(teacher) == before

    out = evaluate.evaluate(evaluate.load(None, run / "export", None), root / "data", batches=4,
                            micro_batch=4, teacher=teacher)
    assert out["kl_teacher_student"] == pytest.approx(distilled, rel=1e-5)
    own = evaluate.evaluate(evaluate.load(None, teacher, None), root / "data", batches=4, micro_batch=4)
    assert out["teacher_loss"] == pytest.approx(own["loss"], rel=1e-5) and json.dumps(out)


def test_lm_eval_runs_a_hugging_face_teacher_for_comparison(tmp_path):
    """`make eval ARGS="--hf TEACHER ..."`: the teacher through lm-eval's own HF model, results
    written to --out, nothing written into the teacher's dir."""
    import json

    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from pipeline import lm_eval
    from pipeline_helpers import EOT_NAME, ROOT, write_tokenizer

    write_tokenizer(tmp_path / "tokenizer.json")
    teacher = tmp_path / "teacher"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=64, num_attention_heads=4,
                                 num_key_value_heads=2, num_hidden_layers=2,
                                 intermediate_size=128)).save_pretrained(teacher)
    PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                            eos_token=EOT_NAME).save_pretrained(teacher)
    before = digests(teacher)
    tasks = ROOT / "configs" / "lm_eval_tasks"
    rc = lm_eval.main(["--hf", str(teacher), "--tasks", "python_mc", "--include-path", str(tasks),
                       "--limit", "4", "--out", str(tmp_path / "out"), "--device", "cpu",
                       "--bootstrap-iters", "0"])
    assert rc == 0
    result = json.loads((tmp_path / "out" / "export.json").read_text())
    assert result["results"]["python_mc"]["acc,none"] is not None
    assert digests(teacher) == before
    assert lm_eval.main(["--hf", str(tmp_path / "missing"), "--tasks", "python_mc"]) == 2
