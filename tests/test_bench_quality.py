"""The quality benchmark runs end to end on a tiny Criteo-shaped log: every model, every
choice made on validation, one table."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


def test_smoke_run_scores_widedeep_and_both_baselines(tmp_path):
    out = tmp_path / "quality.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(SCRIPT), "--datasets", "criteo_like",
                           "--rows", "3000", "--smoke", "--tune-trials", "2",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| dataset | model | eval AUC | log loss | seconds | chosen on validation |" \
        in done.stdout
    results = json.loads(out.read_text())
    assert results["cpu"]
    models = results["results"]["criteo_like"]["models"]
    assert {"Wide & Deep (config)", "wide only", "deep only", "logistic regression",
            "LightGBM"} <= set(models)
    assert any(name.startswith("Wide & Deep (tuned, 2 trials") for name in models)
    for name, model in models.items():
        assert 0.5 < model["auc"] < 1 and model["log_loss"] > 0, name
    assert models["logistic regression"]["setting"].startswith("C=")
    assert "trees" in models["LightGBM"]["setting"]
