"""Model quality against the baselines people would otherwise use (`make bench-quality`).

For each dataset, on one transform output (the same split, the same columns): Wide & Deep
with the config's [train], after `widedeep tune` (optional: --tune-trials), wide only and
deep only; a logistic regression (scikit-learn: one-hot ids, one-hot quantile buckets) and
LightGBM (integer-coded categoricals, the numeric columns, token counts of multivalent
ones). Every choice (the epoch, the tuned [train], the baselines' C, leaves and trees) is
made on the validation split; eval only measures. Prints AUC, log loss and wall time per
model, with the CPU model, and writes them to ``bench/quality.json``.

Datasets: ``criteo_like`` (transforms/synthetic_ctr.py), ``appstore`` (the built-in log),
``adult`` and ``movielens`` (from ../shared/data or $WIDEDEEP_SHARED_DATA, skipped when
absent), or any ``--config C --input GLOB [--eval-input GLOB]``.

The baselines read the transform output, not the raw files: their inputs are the columns the
model reads, after the same vocabularies and quantile boundaries (trees are unchanged by the
monotone quantile map up to its bucket resolution).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import common  # (first: the Keras mode, the repository on sys.path)
import numpy as np

from configs import shipped_config  # noqa: E402
from pipeline import gate  # noqa: E402
from transforms import config as cfg  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("WIDEDEEP_SHARED_DATA") or os.path.join(HERE, "..", "..", "shared",
                                                                 "data")
LR_C = (0.01, 0.03, 0.1, 0.3, 1.0)
LGBM_LEAVES = (15, 63)


def prepare_dataset(name: str, work: str, rows: int) -> tuple[str, str, str | None] | None:
    """(config path, input glob, eval input glob or None), or None when the data is absent."""
    from pipeline import datasets

    if name in common.SYNTHETIC:
        return (*common.write_synthetic(name, os.path.join(work, "raw"), rows), None)
    if name == "adult":
        folder = os.path.join(SHARED, "adult")
        if not os.path.exists(os.path.join(folder, "adult.data")):
            return None
        return (shipped_config("census.toml"), os.path.join(folder, "adult.data"),
                os.path.join(folder, "adult.test"))
    if name == "movielens":
        folder = os.path.join(SHARED, "ml-100k")
        if not os.path.exists(os.path.join(folder, "u.data")):
            return None
        path = datasets.prepare(datasets.MOVIELENS_100K, folder, os.path.join(work, "raw"))
        return shipped_config("movielens.toml"), path, None
    raise SystemExit(f"unknown dataset {name!r}")


# ---------------------------------------------------------------------------------------
# Wide & Deep


def widedeep(config, transform_dir: str, work: str, name: str, params) -> dict:
    from trainer.train import train

    started = time.time()
    summary = train(config, transform_dir, os.path.join(work, name), params=params,
                    log=lambda line: None)
    result = gate.metrics(*common.eval_predictions(config, transform_dir,
                                                   os.path.join(work, name)))
    return {**_headline(result), "seconds": round(time.time() - started, 1),
            "setting": f"best epoch {summary.get('best_epoch')}"}


# ---------------------------------------------------------------------------------------
# Baselines


def load_split(config, transform_dir: str, split: str) -> tuple[dict, np.ndarray]:
    """The base columns the model reads (no crosses), as numpy, and the labels."""
    import tensorflow_transform as tft

    from trainer import data

    spec = tft.TFTransformOutput(transform_dir).transformed_feature_spec()
    names = [c.name for c in config.feature_columns if c.name in spec] + [config.label.column]
    return common.read_split(data.split_files(transform_dir, split), {n: spec[n] for n in names},
                             config.label.column)


def sizes(config, transform_dir: str) -> dict[str, int]:
    """Ids per categorical column, buckets per numeric one."""
    import tensorflow_transform as tft

    from transforms import features

    tft_output = tft.TFTransformOutput(transform_dir)
    specs = features.categorical_specs(config)
    return {c.name: (features.cardinality(specs[c.name], tft_output) if c.is_categorical
                     else c.quantile_buckets)
            for c in config.feature_columns if c.name in specs or c.kind == cfg.NUMERIC}


def one_hot(config, columns: dict, size: dict):
    """The logistic regression people write: one-hot ids and quantile buckets."""
    from scipy import sparse

    blocks = []
    for c in config.feature_columns:
        if c.name not in columns:
            continue
        values, n = columns[c.name], size[c.name]
        if c.kind == cfg.MULTIVALENT:
            cols, lengths = values
        else:
            cols = (np.clip(np.round(values * (n - 1)).astype(int), 0, n - 1)
                    if c.kind == cfg.NUMERIC else values)
            lengths = np.ones(len(values), dtype=int)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        blocks.append(sparse.csr_matrix((np.ones(len(rows)), (rows, np.asarray(cols).astype(int))),
                                        shape=(len(lengths), n)))
    return sparse.hstack(blocks).tocsr()


def tree_matrix(config, columns: dict) -> tuple[np.ndarray, list[int]]:
    """Numbers as numbers, single-valued ids as categorical codes, lists as their lengths."""
    out, categorical = [], []
    for c in config.feature_columns:
        if c.name not in columns:
            continue
        values = columns[c.name]
        if c.kind == cfg.MULTIVALENT:
            out.append(values[1].astype(np.float64))
        else:
            if c.kind != cfg.NUMERIC:
                categorical.append(len(out))
            out.append(np.asarray(values, dtype=np.float64))
    return np.stack(out, axis=1), categorical


def baselines(config, transform_dir: str) -> dict[str, dict]:
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression

    splits = {s: load_split(config, transform_dir, s) for s in ("train", "validation", "eval")}
    size = sizes(config, transform_dir)
    results = {}

    started = time.time()
    X = {s: one_hot(config, splits[s][0], size) for s in splits}
    y = {s: splits[s][1] for s in splits}
    best = None
    for c in LR_C:
        model = LogisticRegression(C=c, max_iter=3000).fit(X["train"], y["train"])
        loss = gate.log_loss(y["validation"], model.predict_proba(X["validation"])[:, 1])
        if best is None or loss < best[0]:
            best = (loss, c, model)
    eval_metrics = gate.metrics(y["eval"], best[2].predict_proba(X["eval"])[:, 1])
    results["logistic regression"] = {**_headline(eval_metrics),
                                      "seconds": round(time.time() - started, 1),
                                      "setting": f"C={best[1]} (of {LR_C})"}

    started = time.time()
    T = {s: tree_matrix(config, splits[s][0]) for s in splits}
    best = None
    for leaves in LGBM_LEAVES:
        model = lgb.LGBMClassifier(n_estimators=3000, learning_rate=0.05, num_leaves=leaves,
                                   min_child_samples=20, subsample=0.8, subsample_freq=1,
                                   colsample_bytree=0.8, verbose=-1, random_state=0)
        model.fit(T["train"][0], y["train"], eval_X=(T["validation"][0],),
                  eval_y=(y["validation"],), eval_metric="binary_logloss",
                  categorical_feature=T["train"][1],
                  callbacks=[lgb.early_stopping(50, verbose=False)])
        loss = gate.log_loss(y["validation"], model.predict_proba(T["validation"][0])[:, 1])
        if best is None or loss < best[0]:
            best = (loss, leaves, model)
    eval_metrics = gate.metrics(y["eval"], best[2].predict_proba(T["eval"][0])[:, 1])
    results["LightGBM"] = {**_headline(eval_metrics), "seconds": round(time.time() - started, 1),
                           "setting": f"{best[1]} leaves, {best[2].best_iteration_} trees"}
    return results


def _headline(metrics: dict) -> dict:
    return {"auc": round(metrics["auc"], 4), "log_loss": round(metrics["log_loss"], 4)}


# ---------------------------------------------------------------------------------------


def run_dataset(name: str, config_path: str, input_glob: str, eval_glob: str | None,
                work: str, tune_trials: int, tune_minutes: float, smoke: bool) -> dict:
    from pipeline import transform_job, tune

    config = common.load_config(config_path,
                                smoke_train={**common.SMOKE_MODEL, "epochs": 2} if smoke else None)
    transform_dir = os.path.join(work, "transform")
    started = time.time()
    stats = transform_job.run_transform(config, input_glob, transform_dir,
                                        eval_input_pattern=eval_glob, log=lambda line: None)
    print(f"{name}: transform {time.time() - started:.0f}s, rows {stats['rows_out']}",
          flush=True)
    models = {}
    for label, model_type in (("Wide & Deep (config)", "wide_deep"), ("wide only", "wide"),
                              ("deep only", "deep")):
        params = dataclasses.replace(config.train, model_type=model_type)
        models[label] = widedeep(config, transform_dir, work, model_type, params)
        print(f"{name}: {label}: {models[label]}", flush=True)
    if tune_trials:
        started = time.time()
        winner = tune.tune(config, transform_dir, os.path.join(work, "tune"), trials=tune_trials,
                           timeout_seconds=tune_minutes * 60,
                           log=lambda line: print(line, flush=True))
        params = dataclasses.replace(config.train, **{
            k: tuple(v) if isinstance(v, list) else v for k, v in winner["params"].items()})
        label = f"Wide & Deep (tuned, {tune_trials} trials ≤ {tune_minutes:g} min)"
        models[label] = widedeep(config, transform_dir, work, "tuned", params)
        models[label]["seconds"] = round(time.time() - started, 1)
        print(f"{name}: {label}: {models[label]}", flush=True)
    models.update(baselines(config, transform_dir))
    return {"rows": stats["rows_out"], "models": models}


def markdown(results: dict, cpu: str) -> str:
    lines = [f"CPU: {cpu}", "", "| dataset | model | eval AUC | log loss | seconds | chosen on validation |",
             "|---|---|---|---|---|---|"]
    for name, result in results.items():
        for model, m in result["models"].items():
            lines.append(f"| {name} | {model} | {m['auc']:.4f} | {m['log_loss']:.4f} | "
                         f"{m['seconds']:.0f} | {m['setting']} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="criteo_like,appstore,adult,movielens")
    parser.add_argument("--config", help="your own config (with --input)")
    parser.add_argument("--input")
    parser.add_argument("--eval-input")
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic rows")
    parser.add_argument("--tune-trials", type=int, default=0)
    parser.add_argument("--tune-minutes", type=float, default=10.0)
    parser.add_argument("--work", default="/tmp/widedeep-bench-quality")
    parser.add_argument("--out", default=os.path.join(HERE, "quality.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny models: checks the plumbing")
    args = parser.parse_args(argv)
    cpu = common.cpu_model()
    jobs = []
    if args.config:
        jobs.append(("yours", args.config, args.input, args.eval_input))
    else:
        for name in args.datasets.split(","):
            work = os.path.join(args.work, name)
            prepared = prepare_dataset(name, work, args.rows)
            if prepared is None:
                print(f"{name}: skipped (no data in {SHARED})", flush=True)
                continue
            jobs.append((name, *prepared))
    results = {}
    for name, config_path, input_glob, eval_glob in jobs:
        results[name] = run_dataset(name, config_path, input_glob, eval_glob,
                                    os.path.join(args.work, name), args.tune_trials,
                                    args.tune_minutes, args.smoke)
    with open(args.out, "w") as f:
        json.dump({"cpu": cpu, "results": results}, f, indent=2)
    print(markdown(results, cpu))
    return results


if __name__ == "__main__":
    main()
