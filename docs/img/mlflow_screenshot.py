"""Photograph a run's charts in the MLflow UI with headless Chromium (docs/img/mlflow.png).

    python docs/img/mlflow_screenshot.py --url http://127.0.0.1:5077 --run dashboard-tiny
        [--store mlruns] [--out docs/img/mlflow.png] [--chromium /usr/bin/chromium]

Looks the run up in the local store, opens its "Model metrics" tab, narrows it to the charts
that tell the story (--charts: loss, lr, phase, val_loss, eval/.../acc and bits_per_byte) and saves
the page; also saves the "System metrics" tab beside it
(`<out stem>-system.png`), which is where CPU, memory and GPU charts appear. MLflow 3.17's UI has
a global GenAI / Model training switch that decides its layout (the experiment-kind tag only
decides it where that switch is off), so the pages are opened with ?workflowType=machine_learning.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# the UI's assistant panel opens by itself on a first visit and would cover the charts
ASSISTANT_CLOSED = """localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"""
CHARTS = r"^(loss|lr|phase|val_loss|eval/.*/(acc|bits_per_byte))$"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_run(store: Path, name: str) -> tuple[str, str]:
    """(experiment id, run id) of the newest run called `name`."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store.resolve() / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"attributes.run_name = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"no run named {name!r} in {store}")
    return runs[0].info.experiment_id, runs[0].info.run_id


def shoot(page, url: str, out: Path, wait_for: str, charts: str | None = None) -> None:
    page.goto(url + "?workflowType=machine_learning")
    page.wait_for_load_state("load")
    page.get_by_text(wait_for).first.wait_for(timeout=60000)
    if charts:
        page.get_by_placeholder("Search metric charts").fill(charts)
    page.wait_for_timeout(4000)  # the charts draw after their data arrives
    page.screenshot(path=str(out), full_page=True)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--run", required=True, help="run name")
    parser.add_argument("--store", type=Path, default=Path("mlruns"))
    parser.add_argument("--out", type=Path, default=Path("docs/img/mlflow.png"))
    parser.add_argument("--charts", default=CHARTS, help="regular expression: the charts to show")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    exp, run = find_run(args.store, args.run)
    base = f"{args.url}/#/experiments/{exp}/runs/{run}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1750})
        page.add_init_script(ASSISTANT_CLOSED)
        shoot(page, f"{base}/model-metrics", args.out, "eval/", args.charts)
        shoot(page, f"{base}/system-metrics", args.out.with_name(args.out.stem + "-system.png"),
              "cpu_utilization_percentage")
        browser.close()


if __name__ == "__main__":
    main()
