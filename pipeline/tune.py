"""`widedeep tune`: a hyperparameter search on the validation holdout, never on eval.

Each trial trains a model on the transform output's train split with early stopping on its
validation split (``split.validation_fraction``) and is scored by the best epoch's
validation log loss. The search is Optuna's TPE sampler, seeded from ``train.seed``, within
a trial count and a time budget. What it writes (``--out``):

    trials.json          every trial (numbered from 0; trial 0 is the config's own [train]):
                         its parameters, validation log loss and AUC, best epoch, seconds;
                         the winner first
    tuned_train.toml     the config's [train] with the winner's values: paste it over the
                         config's [train]

Trial models are deleted once scored; only the numbers are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable

from transforms import config as cfg
from transforms import paths

LOG = logging.getLogger("widedeep")
TRIALS_FILE = "trials.json"
TUNED_TRAIN_FILE = "tuned_train.toml"

# What is searched, as (kind, arguments): "log" is a float on a log scale, "choice" one of
# the listed values. Layer sizes go from the paper's tower down: small data overfits it.
SEARCH_SPACE: dict[str, tuple[str, Any]] = {
    "wide_learning_rate": ("log", (0.01, 1.0)),
    "wide_l1": ("log", (1e-5, 0.1)),
    "wide_l2": ("log", (1e-3, 10.0)),
    "deep_learning_rate": ("log", (0.003, 0.3)),
    "embedding_dim": ("choice", (8, 16, 32, 64)),
    "hidden_units": ("choice", ((1024, 512, 256), (512, 256), (256, 128), (128, 64))),
}


class TuneError(ValueError):
    """The search cannot run (no validation holdout) or found nothing."""


def _suggest(trial, space: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    values = {}
    for name, (kind, arguments) in space.items():
        if kind == "log":
            values[name] = trial.suggest_float(name, *arguments, log=True)
        else:
            # Optuna stores choices as plain values: tuples go in by index.
            index = trial.suggest_categorical(name, list(range(len(arguments))))
            values[name] = arguments[index]
    return values


def tune(config: cfg.FeatureConfig, transform_dir: str, out_dir: str, *, trials: int = 20,
         timeout_seconds: float | None = None,
         space: dict[str, tuple[str, Any]] | None = None,
         log: Callable[[str], None] = LOG.info) -> dict:
    """Runs the search; returns the winner's record (also first in trials.json)."""
    import optuna

    from trainer import data
    from trainer import train as trainer

    if not data.optional_split_files(transform_dir, data.VALIDATION):
        raise TuneError(f"{transform_dir} has no validation split: tuning needs one (set "
                        f"split.validation_fraction > 0 in {config.source} and rerun the "
                        f"transform), so that eval is never used to choose")
    space = space or SEARCH_SPACE
    base = config.train
    if not base.early_stopping_patience:
        base = dataclasses.replace(base, early_stopping_patience=2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=base.seed))
    records: list[dict] = []
    started = time.time()
    log(f"tune: up to {trials} trial(s)"
        + (f" or {timeout_seconds:.0f}s" if timeout_seconds else "")
        + f", searching {', '.join(space)} on the validation split of {transform_dir}")

    def run_trial(values: dict[str, Any], source: str) -> float:
        params = dataclasses.replace(base, **values)
        number = len(records)
        model_dir = paths.join(out_dir, "trials", str(number))
        trial_started = time.time()
        try:
            summary = trainer.train(config, transform_dir, model_dir, params=params,
                                    log=lambda line: None)
        finally:
            paths.rmtree(model_dir)
        validation = summary.get("best_validation") or {}
        loss = validation.get("log_loss", math.nan)
        record = {"trial": number, "source": source, "params": _plain(values),
                  "validation_log_loss": loss, "validation_auc": validation.get("auc"),
                  "best_epoch": summary.get("best_epoch"),
                  "seconds": round(time.time() - trial_started, 1)}
        records.append(record)
        best = min((r for r in records if math.isfinite(r["validation_log_loss"])),
                   key=lambda r: r["validation_log_loss"], default=None)
        elapsed = time.time() - started
        left = (trials - len(records)) * elapsed / len(records)
        if timeout_seconds:
            left = min(left, max(timeout_seconds - elapsed, 0.0))
        log(f"tune: trial {len(records)}/{trials} ({source}): validation log loss {loss:.4f} "
            f"({record['seconds']:.0f}s); best {best['validation_log_loss']:.4f} (trial "
            f"{best['trial'] + 1}); about {left / 60:.1f} min left" if best else
            f"tune: trial {len(records)}/{trials}: no finite validation log loss")
        return loss if math.isfinite(loss) else float("inf")

    # The config's own [train] first: the search returns nothing worse on validation than
    # what the config already has (on MovieLens all 12 TPE trials were worse than it).
    run_trial({name: getattr(base, name) for name in space}, "config")
    if trials > 1:
        study.optimize(lambda trial: run_trial(_suggest(trial, space), "search"),
                       n_trials=trials - 1,
                       timeout=max(timeout_seconds - (time.time() - started), 1.0)
                       if timeout_seconds else None)
    finite = [r for r in records if math.isfinite(r["validation_log_loss"])]
    if not finite:
        raise TuneError("tune: no trial gave a finite validation log loss")
    winner = min(finite, key=lambda r: r["validation_log_loss"])
    ordered = [winner] + [r for r in records if r is not winner]
    paths.makedirs(out_dir)
    paths.write_json(paths.join(out_dir, TRIALS_FILE), ordered)
    tuned = dataclasses.replace(base, **{k: tuple(v) if isinstance(v, list) else v
                                         for k, v in winner["params"].items()})
    toml_path = paths.write_text(paths.join(out_dir, TUNED_TRAIN_FILE),
                                 train_block(tuned, winner, len(records)))
    log(f"tune: best of {len(records)} trial(s): validation log loss "
        f"{winner['validation_log_loss']:.4f} (trial {winner['trial'] + 1}); its [train] → "
        f"{toml_path}, every trial → {paths.join(out_dir, TRIALS_FILE)}")
    return winner


def _plain(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def train_block(params: cfg.TrainParams, winner: dict, trials: int) -> str:
    """A [train] table holding every parameter, the winner's among them."""
    lines = [f"# widedeep tune: best of {trials} trial(s), validation log loss "
             f"{winner['validation_log_loss']:.4f}", "[train]"]
    for field in dataclasses.fields(params):
        lines.append(f"{field.name} = {_toml_value(getattr(params, field.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(float(f"{value:.6g}"))
    return str(value)
