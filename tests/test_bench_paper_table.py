"""The Table 1 benchmark runs end to end on a tiny log and merges its table."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "paper_table.py"


def test_smoke_run_scores_the_three_models_and_keeps_other_results(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"transform": {"ours_rows_per_second": 1.0}}))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| Model | Offline AUC | Log loss | Gain over wide |" in done.stdout
    page = (tmp_path / "paper_table.html").read_text()
    assert "Wide &amp; Deep (joint)" in page and "data:image/png;base64," in page
    results = json.loads(out.read_text())
    assert results["transform"] == {"ours_rows_per_second": 1.0}
    table = results["paper_table"]
    assert table["smoke"] is True
    assert set(table["models"]) == {"wide", "deep", "wide_deep"}
    for name, model in table["models"].items():
        assert 0 < model["auc"] < 1, name
        assert model["log_loss"] > 0 and model["calibration"] > 0, name
        # The chosen setting is the grid's lowest selection log loss.
        grid = table["selection"]["grid"][name]
        assert model["params"] == min(grid, key=lambda r: r["log_loss"])["params"]
        assert len(model["roc"]["fpr"]) == len(model["roc"]["tpr"]) > 2
    assert table["models"]["wide"]["gain_over_wide"] == 0
    truth = table["true_probability"]
    assert 0.5 < truth["auc"] < 1
    assert table["eval_examples"] + table["train_examples"] == table["rows"]
    assert (table["selection"]["fit_examples"] + table["selection"]["selection_examples"]
            == table["train_examples"])
