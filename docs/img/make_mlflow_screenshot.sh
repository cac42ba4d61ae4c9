#!/usr/bin/env bash
# The README's MLflow screenshot (docs/img/mlflow.png), from a real run:
#   bash docs/img/make_mlflow_screenshot.sh        (from the repository root, after `make data`)
# trains a tiny GoldFinch run with a freeze phase change and lm-eval every 20 steps on the offline
# tasks in configs/lm_eval_tasks, serves the store with `make mlflow-ui`, and photographs the run's
# charts in headless Chromium. Needs Chromium (Debian: apt-get install chromium; CHROMIUM=path
# elsewhere) and Playwright's Python package in the venv (.venv/bin/pip install playwright).
set -euo pipefail
RUN=${RUN:-dashboard-tiny}
PORT=${MLFLOW_PORT:-5077}
OUT=${OUT:-docs/img/mlflow.png}
PY=.venv/bin/python

"$PY" -m pipeline.train train.run_name="$RUN" model.n_layer=3 model.n_embd=128 model.head_size=32 \
    model.ctx_len=128 train.max_steps=60 train.warmup_steps=5 train.save_every=20 train.val_every=10 \
    train.log_every=10 train.eval_every=20 "train.eval_tasks=[python_mc,python_code]" \
    train.eval_include_path=configs/lm_eval_tasks tracking.system_metrics_every=2 train.export=false \
    "freeze.phases=[{until_step:30,train:[gold,head,kv_compression]},{train:[all]}]"

setsid make --no-print-directory mlflow-ui MLFLOW_PORT="$PORT" >"${TMPDIR:-/tmp}/mlflow-ui-$PORT.log" 2>&1 &
UI=$!
trap 'kill -- -$UI 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 1
done
"$PY" docs/img/mlflow_screenshot.py --url "http://127.0.0.1:$PORT" --run "$RUN" --out "$OUT"
