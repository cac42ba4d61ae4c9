"""Local lm-eval tasks for the tests: task YAML over JSON-lines data that the tests write, so
nothing is downloaded. Texts use the characters of pipeline_helpers.write_tokenizer's corpus."""
import json
from pathlib import Path

MC_ROWS = [{"q": f"name{i} = value", "choices": [f"{i * 7} + {i}", f" {i * 7}", f"{i + 1}"],
            "label": i % 3} for i in range(8)]
ROLL_ROWS = [{"text": "".join(f"name{i + j} = value{(i + j) * 7} + {j}\n" for j in range(n))}
             for i, n in ((3, 9), (40, 2), (7, 4))]
GEN_ROWS = [{"q": f"name{i} = value{i * 7} + {i}\nname{i + 1} =", "a": f" value{(i + 1) * 7}"}
            for i in range(3)]

TASKS = {
    "tiny_mc": (MC_ROWS, """output_type: multiple_choice
doc_to_text: "{{q}}"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""),
    "tiny_roll": (ROLL_ROWS, """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""),
    "tiny_gen": (GEN_ROWS, """output_type: generate_until
doc_to_text: "{{q}}"
doc_to_target: "{{a}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""),
}


def write_tasks(root: Path) -> Path:
    """One YAML + one JSON-lines file per task under root; returns root (for --include-path)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (rows, body) in TASKS.items():
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\n{body}")
    return root
