"""The run report: one self-contained page that says what happened and why, even for a run
that stopped early.

The run dirs here are written directly as the orchestrator leaves them (no training), with
metrics computed by the real `pipeline.gate` functions on made-up scores.
"""

import base64
import html
import json
import os
import re

import numpy as np
import pytest

from pipeline import gate, report
from transforms.config import GateParams

RUN_ID = "20260302T020000Z"
SLICES = {"country": ["US"] * 600 + ["DE"] * 300 + ["FR"] * 70 + ["LU"] * 30,
          "device_class": ["mid", "low"] * 500}
GATE = GateParams(min_auc=0.6, max_calibration_error=0.15, max_auc_drop=0.002,
                  max_logloss_increase=0.002)


def eval_split(examples=1000):
    """Labels drawn from a latent click propensity (about 14% positive)."""
    rng = np.random.default_rng(0)
    latent = rng.normal(0, 1.2, examples) - 2.3
    labels = (rng.random(examples) < 1 / (1 + np.exp(-latent))).astype(np.float64)
    return labels, latent


def evaluated(noise, seed):
    """Metrics as `gate.evaluate_export` returns them, for a model that sees the latent
    propensity through `noise`."""
    labels, latent = eval_split()
    rng = np.random.default_rng(seed)
    scores = 1 / (1 + np.exp(-(latent + rng.normal(0, noise, len(labels)))))
    result = gate.metrics(labels, scores)
    fpr, tpr = gate.roc_curve(labels, scores)
    result["slices"] = gate.sliced_metrics(labels, scores, SLICES)
    result["roc"] = {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}
    return result


def stage(outcome="done", seconds=1.5, **fields):
    return {"started": "2026-03-02T02:00:00+00:00", "outcome": outcome,
            "ended": "2026-03-02T02:00:02+00:00", "seconds": seconds, **fields}


def transform_stats():
    return {"input": "gs://logs/day=2026-03-01/*.csv", "eval_input": None, "input_files": 4,
            "rows_in": 10_000, "rows_out": {"train": 8_871, "eval": 1_000},
            "positive_rate": {"train": 0.0941, "eval": 0.0712},
            "rows_dead_lettered": 129, "dead_letter_fraction": 0.0129,
            "dead_letter_by_reason": {"not_a_number": 17, "wrong_field_count": 112},
            "vocabulary_sizes": {"vocab_country": 20, "vocab_installed_apps": 2976},
            "seconds": 12.5, "rows_per_second": 800.0, "config_digest": "abc123"}


PREVIOUS_MODEL = "/work/runs/20260301T020000Z/model"
WARM_START = {  # as trainer.warm_start reports it
    "from": PREVIOUS_MODEL, "checkpoint": f"{PREVIOUS_MODEL}/checkpoints/ckpt-70",
    "vocabularies": {"vocab_country": {"remapped": 19, "new": 1, "dropped": 2,
                                       "oov_rows_carried": 1}},
    "hashed": {}, "copied": ["deep/dense/kernel", "deep/dense/bias"],
    "fresh": {"wide/cross_country_app": "hash buckets changed (1000 -> 2000)"}}


def train_summary(run_dir):
    """The train stage's result: trainer.train's summary plus where it warm-started from."""
    return {"warm_start_from": PREVIOUS_MODEL, "model_type": "wide_deep", "steps": 140,
            "epochs_completed": 2, "steps_per_epoch": 70, "train_examples": 8_871,
            "resumed_from_step": None, "steps_this_run": 140, "examples_per_second": 5120.4,
            "final_eval": {"auc": 0.69, "log_loss": 0.305}, "warm_start": WARM_START,
            "params": {"model_type": "wide_deep", "hidden_units": [16, 8], "epochs": 2},
            "paths": {"history": os.path.join(run_dir, "model", "history.json")}}


def history():
    def epoch(n, train_loss, eval_loss, train_auc, eval_auc):
        return {"epoch": n, "complete": True, "step": 70 * n,
                "train": {"log_loss": train_loss, "auc": train_auc, "accuracy": 0.9},
                "validation": {"log_loss": eval_loss + 0.01, "auc": eval_auc - 0.01,
                               "accuracy": 0.9, "examples": 900},
                "eval": {"log_loss": eval_loss, "auc": eval_auc, "accuracy": 0.9,
                         "examples": 1000}}
    return [epoch(1, 0.33, 0.32, 0.61, 0.66), epoch(2, 0.31, 0.305, 0.68, 0.69)]


def write_json(run_dir, relative_path, value):
    path = os.path.join(run_dir, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f)


def write_finished_run(tmp_path, candidate_noise=0.9):
    """A run the gate decided on, against serving version 3, as `widedeep run` leaves it.

    The default candidate is noisier than the baseline (AUC 0.68 vs 0.74): rejected."""
    run_dir = str(tmp_path / "runs" / RUN_ID)
    metrics = {"candidate": evaluated(candidate_noise, seed=1),
               "baseline": evaluated(0.6, seed=2), "baseline_version": 3,
               "eval_examples": len(SLICES["country"])}
    decision = gate.decide(metrics["candidate"], metrics["baseline"], GATE).to_json()
    manifest = {
        "run_id": RUN_ID, "created": "2026-03-02T02:00:00+00:00",
        "config": "configs/appstore.toml", "config_digest": "abc123", "code_version": "0fcd524",
        "inputs": {"input": "gs://logs/day=2026-03-01/*.csv", "eval_input": None},
        "stages": {"transform": stage(seconds=12.9, result=transform_stats()),
                   "train": stage(seconds=30.2, result=train_summary(run_dir)),
                   "export": stage(), "evaluate": stage(), "gate": stage(result=decision)},
        "gate": decision, "blessed": False}
    write_json(run_dir, "manifest.json", manifest)
    write_json(run_dir, "transform/stats.json", transform_stats())
    write_json(run_dir, "model/history.json", history())
    write_json(run_dir, "eval/metrics.json", metrics)
    write_json(run_dir, "eval/gate.json", decision)
    return run_dir, metrics, decision


def read_report(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def table_rows(page):
    """Each table row as a list of its cells' text."""
    return [[html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", page)]


def text_of(page):
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def assert_self_contained(page):
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert all(r.startswith("data:image/png;base64,") for r in references)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page):
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_of_a_rejected_run_explains_the_decision(tmp_path):
    run_dir, metrics, decision = write_finished_run(tmp_path)
    assert not decision["blessed"], "the noisier candidate should be rejected"
    ablations = {"wide": evaluated(1.2, seed=3), "deep": evaluated(0.6, seed=4)}

    path = report.write_report(run_dir, ablations=ablations)

    assert path == os.path.join(run_dir, "report.html")
    page = read_report(path)
    assert_self_contained(page)
    assert page.count("data:image/png;base64,") == 2  # learning curves, ROC
    text = text_of(page)
    assert f"widedeep run {RUN_ID}" in text
    assert "Rejected; serving unchanged (version 3 stays)" in text
    assert decision["reason"] in text and "< baseline" in decision["reason"]
    assert "configs/appstore.toml (digest abc123)" in text and "0fcd524" in text
    rows = table_rows(page)
    stage_names = [row[0] for row in rows[1:6]]
    assert stage_names == ["transform", "train", "export", "evaluate", "gate"]
    # data: dead letters by reason, most frequent first, with their share of the input
    assert ["wrong_field_count", "112", "1.12%"] in rows
    assert ["not_a_number", "17", "0.17%"] in rows
    assert "129 (1.29% of rows in)" in text
    assert "train 9.41%, eval 7.12%" in text  # a shifted eval day shows beside calibration
    assert ["vocab_installed_apps", "2,976"] in rows
    # training: the warm start's remap counts and what stayed fresh
    assert ["vocab_country", "19", "1", "2", "1"] in rows
    assert f"From {PREVIOUS_MODEL} (ckpt-70)." in text
    assert "wide/cross_country_app: hash buckets changed (1000 -> 2000)" in text
    # the validation holdout beside train and eval, epoch by epoch
    assert ["2", "140", "0.3100", "0.3150", "0.3050", "0.6800", "0.6800", "0.6900"] in rows
    # evaluation: every model as a column, candidate minus baseline
    candidate, baseline = metrics["candidate"], metrics["baseline"]
    assert ["metric", "candidate", "baseline (serving v3)", "wide-only", "deep-only",
            "candidate − baseline"] in rows
    assert ["AUC", *(f"{m['auc']:.4f}" for m in (candidate, baseline, *ablations.values())),
            f"{candidate['auc'] - baseline['auc']:+.4f}"] in rows
    # per slice: both models' AUC; a slice too small for an AUC shows a dash
    de, de_baseline = candidate["slices"]["country"]["DE"], baseline["slices"]["country"]["DE"]
    assert ["country", "DE", "300", f"{de['auc']:.4f}", f"{de_baseline['auc']:.4f}",
            f"{de['auc'] - de_baseline['auc']:+.4f}"] in rows
    assert ["country", "LU", "30", "—", "—", "—"] in rows
    assert any(row[:3] == ["device_class", "mid", "500"] for row in rows)
    assert "Missing from this report" not in text


def test_report_of_a_blessed_run_names_the_serving_version(tmp_path):
    run_dir, _, _ = write_finished_run(tmp_path, candidate_noise=0.3)
    with open(os.path.join(run_dir, "manifest.json")) as f:
        manifest = json.load(f)
    decision = manifest["gate"]
    assert decision["blessed"]
    manifest["stages"]["publish"] = stage(result={
        "version": 4, "path": "/work/serving/4",
        "dry_run": "1000 raw examples scored in a fresh process, all finite in [0, 1]"})
    manifest.update(blessed=True, serving_version=4)
    write_json(run_dir, "manifest.json", manifest)

    text = text_of(read_report(report.write_report(run_dir)))

    assert "Blessed: now serving as version 4" in text
    assert decision["reason"] in text
    assert "1000 raw examples scored in a fresh process" in text


def test_report_of_a_run_that_failed_at_transform_says_what_is_missing(tmp_path):
    run_dir = str(tmp_path / RUN_ID)
    error = "TransformError: transform: 3100 of 10000 rows (31.00%) were dead-lettered, over " \
            "the limit of 5.00% <validation.max_dead_letter_fraction>"
    write_json(run_dir, "manifest.json", {
        "run_id": RUN_ID, "created": "2026-03-02T02:00:00+00:00",
        "config": "configs/appstore.toml", "config_digest": "abc123", "code_version": "0fcd524",
        "stages": {"synth": stage(), "transform": stage("failed", error=error)}})
    stats = {**transform_stats(), "rows_dead_lettered": 3100, "dead_letter_fraction": 0.31,
             "dead_letter_by_reason": {"wrong_field_count": 3100}}
    write_json(run_dir, "transform.partial/stats.json", stats)

    page = read_report(report.write_report(run_dir))

    assert_self_contained(page)
    assert "&lt;validation.max_dead_letter_fraction&gt;" in page  # escaped, not a tag
    text = text_of(page)
    assert f"Failed at the transform stage; serving unchanged. {error}" in text
    assert [row[:2] for row in table_rows(page)[1:3]] == [["synth", "done"],
                                                         ["transform", "failed"]]
    assert ["wrong_field_count", "3,100", "31.00%"] in table_rows(page)
    assert "From the failed transform attempt" in text
    assert "Training: The train stage did not run (the run stopped at the transform stage)" in text
    assert "Evaluation: The evaluate stage did not run" in text
    assert "data:image/png" not in page


def test_report_of_a_dir_without_a_manifest_still_renders(tmp_path):
    run_dir = str(tmp_path / RUN_ID)
    os.makedirs(os.path.join(run_dir, "eval"))
    with open(os.path.join(run_dir, "eval", "metrics.json"), "w") as f:
        f.write('{"candidate": {"auc": 0.7')  # cut off mid-write

    text = text_of(read_report(report.write_report(run_dir)))

    assert "No readable manifest.json" in text
    assert "eval/metrics.json is unreadable (JSONDecodeError" in text


def test_learning_curves_read_the_trainers_progress_lines(tmp_path):
    run_dir, _, _ = write_finished_run(tmp_path)
    with open(os.path.join(run_dir, "model", "progress.jsonl"), "w") as f:
        for step in (20, 40, 60):
            f.write(json.dumps({"step": step, "epoch": 1, "log_loss": 0.4 - step / 1000,
                                "auc": 0.5 + step / 1000, "examples_per_second": 900.0}) + "\n")

    scalars = report._load_run(run_dir).train_scalars

    assert scalars["log_loss"] == pytest.approx({20: 0.38, 40: 0.36, 60: 0.34})
    assert scalars["auc"] == pytest.approx({20: 0.52, 40: 0.54, 60: 0.56})
    steps, values = report._train_curve(history(), scalars, "auc")
    assert steps == [20, 40, 60, 70, 140]  # progress points, then the epochs' ends
    assert values[3:] == [0.61, 0.68]
