"""The paper's Table 1 on the synthetic app-store log: wide, deep and Wide & Deep.

Cheng et al. 2016, Table 1, compares a wide-only model (a linear model over crosses), a
deep-only model and the jointly trained Wide & Deep model by offline AUC. This repeats the
comparison on ``make run``'s data, so that each model gets the same chance:

- **Same data.** ``--rows`` rows of day 0 of the synthetic log (``--seed``), transformed once
  with the config (default: the shipped appstore.toml). Every model trains on its train split
  and is scored on its eval split: users never seen in training (the config's hash split).
- **Same budget.** Every run uses the config's [train]: batch size, hidden layers, embedding
  size, L1/L2, and its epochs as the upper bound of early stopping. Only the learning
  rate(s) of the model's own part(s) differ.
- **Each at its best setting,** chosen without looking at the eval split: every setting in
  the model's grid (``GRIDS``) trains on the train split, picks its epoch on the transform's
  validation holdout (``split.validation_fraction`` of the train rows), and the setting with
  the lowest validation log loss is the one scored on the eval split. A row holdout is
  honest here: the generator draws every label independently given its row's columns
  (there is no per-user effect outside them), so a held-out row shares no label noise with
  the rows trained on.
- **The upper bound:** the generator's true install probability, scored on the same eval rows.

Printed: the selection grid, then the table (Model | Offline AUC | Log loss | Gain over wide,
plus calibration = mean prediction / positive rate). The figures, with ROC points
(``pipeline.gate.roc_points``), are merged into ``--out`` under "paper_table", and
``paper_table.html`` beside it shows the table with the four ROC curves (self-contained).

    python bench/paper_table.py [--rows 200000] [--seed 0] [--config TOML]
                                [--work-dir DIR] [--out bench/results.json] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import time

import numpy as np

import common  # noqa: E402  (first: the Keras mode, the repository on sys.path)
from pipeline import gate  # noqa: E402
from pipeline import report  # noqa: E402
from transforms import synthetic  # noqa: E402

DEFAULT_OUT = common.RESULTS_FILE
RESULTS_KEY = "paper_table"
REPORT_NAME = "paper_table.html"  # beside --out
MODELS = ("wide", "deep", "wide_deep")
NAMES = {"wide": "Wide (wide only)", "deep": "Deep (deep only)",
         "wide_deep": "Wide & Deep (joint)"}
# Learning rates tried per model, each grid bracketing its model's optimum: the joint model's
# holds the shipped setting (0.1, 0.02) and FTRL at 0.2 with one rate at a time halved or
# doubled (or 2.5x).
GRIDS = {
    "wide": [{"wide_learning_rate": r} for r in (0.05, 0.1, 0.2, 0.5)],
    "deep": [{"deep_learning_rate": r} for r in (0.01, 0.02, 0.05)],
    "wide_deep": [{"wide_learning_rate": w, "deep_learning_rate": d}
                  for w, d in ((0.2, 0.02), (0.1, 0.02), (0.4, 0.02), (0.2, 0.01),
                               (0.2, 0.05))],
}
SMOKE_ROWS = 3000
SMOKE_GRIDS = {"wide": GRIDS["wide"][1:3], "deep": GRIDS["deep"][1:2],
               "wide_deep": GRIDS["wide_deep"][:1]}
SMOKE_TRAIN = {**common.SMOKE_MODEL, "epochs": 1}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="feature config (default: the shipped appstore.toml)")
    parser.add_argument("--rows", type=int, default=200_000,
                        help="synthetic rows of day 0 (default 200000, as `make run`)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic world (default 0)")
    parser.add_argument("--work-dir", default=None,
                        help="keep the log, the transform output and the final models here "
                             "(default: a temporary directory, removed at the end)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"JSON file to merge the figures into, under key '{RESULTS_KEY}' "
                             "(default: bench/results.json)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_ROWS} rows, 1 epoch, tiny layers, a grid of 1-2 "
                             "settings: checks the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows = min(args.rows, SMOKE_ROWS)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    return args


def select_and_score(config, transform_dir: str, work_dir: str, budget, grids: dict, *,
                     keep_models: bool) -> tuple[dict, np.ndarray, dict]:
    """Every model at every setting of its grid, each picking its epoch on the validation
    split; the lowest validation log loss per model is scored on the eval split:
    (all settings' validation figures per model, eval labels, eval figures per model)."""
    from trainer import train

    grid_results, labels, models = {}, None, {}
    for model_type in MODELS:
        grid_results[model_type], best = [], None
        for i, setting in enumerate(grids[model_type]):
            params = dataclasses.replace(budget, model_type=model_type, **setting)
            model_dir = os.path.join(work_dir, f"model_{model_type}_{i}")
            shutil.rmtree(model_dir, ignore_errors=True)
            started = time.perf_counter()
            summary = train.train(config, transform_dir, model_dir, params=params,
                                  log=lambda line: None)
            seconds = time.perf_counter() - started
            m = summary["best_validation"]
            result = {"params": setting, "auc": round(m["auc"], 5),
                      "log_loss": round(m["log_loss"], 5), "epoch": summary["best_epoch"],
                      "train_seconds": round(seconds, 1)}
            grid_results[model_type].append(result)
            common.log(f"select {model_type}: {_setting(setting)}: validation log loss "
                       f"{result['log_loss']:.4f}, AUC {result['auc']:.4f}, epoch "
                       f"{result['epoch']} ({seconds:.0f} s)")
            if best is None or result["log_loss"] < best[0]["log_loss"]:
                if best is not None:
                    shutil.rmtree(best[1])
                best = (result, model_dir)
            else:
                shutil.rmtree(model_dir)
        result, model_dir = best
        model_labels, probabilities = common.eval_predictions(config, transform_dir, model_dir)
        if labels is not None and not np.array_equal(labels, model_labels):
            raise SystemExit("bench: the eval split came back in another order")
        labels = model_labels
        if not keep_models:
            shutil.rmtree(model_dir)
        models[model_type] = {"params": result["params"],
                              **_headline(gate.metrics(labels, probabilities)),
                              "train_seconds": result["train_seconds"],
                              "roc": gate.roc_points(labels, probabilities)}
        common.log(f"final {model_type}: eval AUC {models[model_type]['auc']:.4f}, "
                   f"log loss {models[model_type]['log_loss']:.4f}")
    return grid_results, labels, models


def true_probability_scores(config, args, labels) -> dict:
    """AUC and log loss of the generator's own install probabilities on the eval rows."""
    from pipeline import io as wd_io

    split = config.split
    if split.method != "hash":
        raise SystemExit(f"bench: {config.source}: split.method = {split.method!r}; the upper "
                         "bound needs the hash split to know which generated rows are eval")
    day = synthetic.simulate_day(synthetic.make_world(args.seed), 0, args.rows)
    keys = (str(k).encode() for k in day.table.column(split.key).to_pylist())
    is_eval = wd_io.hash_fraction(keys) < split.eval_fraction
    true_labels = day.table.column(config.label.column).to_numpy()[is_eval]
    true_probabilities = day.probability[is_eval]
    # The generator's eval rows must be the transform's: same count, same positives.
    if (len(true_labels), int(true_labels.sum())) != (len(labels), int(labels.sum())):
        raise SystemExit(f"bench: the generator's eval rows ({len(true_labels)}, "
                         f"{int(true_labels.sum())} positive) are not the transform's "
                         f"({len(labels)}, {int(labels.sum())} positive)")
    return {**_headline(gate.metrics(true_labels, true_probabilities)),
            "roc": gate.roc_points(true_labels, true_probabilities)}


def _headline(m: dict) -> dict:
    return {k: round(float(m[k]), 5) for k in ("auc", "log_loss", "calibration",
                                               "mean_prediction", "positive_rate")}


def _setting(params: dict) -> str:
    return ", ".join(f"{k.removesuffix('_learning_rate')} lr {v:g}" for k, v in params.items())


TABLE_HEADERS = ("Model", "Offline AUC", "Log loss", "Gain over wide", "Calibration", "Setting")
TRUTH_NAME = "True probability (upper bound)"


def table_rows(models: dict, truth: dict) -> list[list[str]]:
    rows = []
    wide_auc = models["wide"]["auc"]
    for name, m in list(models.items()) + [("truth", truth)]:
        gain = "—" if name == "wide" else f"{m['auc'] - wide_auc:+.4f}"
        setting = _setting(m["params"]) if "params" in m else "generator"
        rows.append([NAMES.get(name, TRUTH_NAME), f"{m['auc']:.4f}", f"{m['log_loss']:.4f}",
                     gain, f"{m['calibration']:.3f}", setting])
    return rows


def markdown_table(models: dict, truth: dict) -> str:
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|---" * len(TABLE_HEADERS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(models, truth)]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import tensorflow_transform.beam  # noqa: F401  (loaded before any clock starts)

    from pipeline import transform_job

    transform_job.quiet_beam_logs()
    config = common.load_config(args.config)
    budget = dataclasses.replace(config.train, **(SMOKE_TRAIN if args.smoke else {}))
    grids = SMOKE_GRIDS if args.smoke else GRIDS
    started = time.perf_counter()
    with common.work_dir(args.work_dir, "bench-paper-table-") as work_dir:
        transform_dir, stats = common.synthetic_transform(config, work_dir, args.rows,
                                                          seed=args.seed)
        rows_out = stats["rows_out"]
        common.log(f"{rows_out['train']:,} train rows to fit, {rows_out['validation']:,} "
                   f"held out to choose settings and epochs; budget: up to {budget.epochs} "
                   f"epoch(s), batch {budget.batch_size}, hidden {list(budget.hidden_units)}, "
                   f"embedding {budget.embedding_dim}, wide L1 {budget.wide_l1:g} L2 "
                   f"{budget.wide_l2:g}")
        grid_results, labels, models = select_and_score(config, transform_dir, work_dir,
                                                         budget, grids,
                                                         keep_models=bool(args.work_dir))

    truth = true_probability_scores(config, args, labels)
    for model_type, m in models.items():
        m["gain_over_wide"] = round(m["auc"] - models["wide"]["auc"], 5)
    truth["gain_over_wide"] = round(truth["auc"] - models["wide"]["auc"], 5)
    ordering = (models["wide_deep"]["auc"] > models["wide"]["auc"]
                and models["wide_deep"]["auc"] > models["deep"]["auc"])

    print()
    print(f"Offline AUC on {len(labels):,} eval rows (users not trained on), "
          f"{rows_out['train']:,} train rows, each model at its best epoch:")
    print()
    print(markdown_table(models, truth))
    print()
    print(f"- Wide & Deep beats both ablations: {'yes' if ordering else 'NO'}")
    print()

    result = {
        "bench": "paper_table", "smoke": args.smoke, "rows": args.rows, "seed": args.seed,
        "config": config.source, "config_digest": config.digest,
        "train_examples": rows_out["train"] + rows_out["validation"],
        "eval_examples": int(len(labels)),
        "budget": {"epochs": budget.epochs, "batch_size": budget.batch_size,
                   "hidden_units": list(budget.hidden_units),
                   "embedding_dim": budget.embedding_dim, "wide_l1": budget.wide_l1,
                   "wide_l2": budget.wide_l2},
        "selection": {"criterion": "lowest log loss on the validation split (epoch and "
                                   "setting)",
                      "fraction_of_train_rows": config.split.validation_fraction,
                      "fit_examples": rows_out["train"],
                      "selection_examples": rows_out["validation"],
                      "grid": grid_results,
                      "chosen": {k: m["params"] for k, m in models.items()}},
        "models": models,
        "true_probability": truth,
        "wide_deep_beats_both": ordering,
        "seconds": round(time.perf_counter() - started, 1),
    }
    common.merge_results(args.out, RESULTS_KEY, result)
    page = _write_page(args, len(labels), budget, ordering, models, truth)
    common.log(f"figures in {args.out}; table and ROC curves in {page}")
    return result


def _write_page(args, eval_rows: int, budget, ordering: bool, models: dict, truth: dict) -> str:
    return report.write_comparison_report(
        os.path.join(os.path.dirname(os.path.abspath(args.out)), REPORT_NAME),
        title="The paper's Table 1 on the synthetic app-store log",
        intro=(f"{args.rows:,} rows of day 0 (seed {args.seed}); {eval_rows:,} eval rows "
               f"(users not trained on); every model at the learning rate and epoch (of up "
               f"to {budget.epochs}) that won on the validation holdout. Wide & Deep beats "
               f"both ablations: {'yes' if ordering else 'NO'}."),
        headers=TABLE_HEADERS, rows=table_rows(models, truth),
        models=[(NAMES[k], m) for k, m in models.items()] + [(TRUTH_NAME, truth)])


if __name__ == "__main__":
    main()
