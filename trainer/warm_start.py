"""Warm start: initialise a new model from a previous run's model_dir, remapping by token.

The paper (section 4) warm-starts each new model from the previous one instead of training
from scratch. Vocabularies move between runs (new apps appear, ranks shift, rare ones drop
under the threshold), so a row index means a different token each day. Rows are therefore
paired **by token**, through the previous run's copies of its vocabularies
(``<previous>/vocab/vocab_<feature>``) and this run's:

- a token in both keeps its learned row, wherever its index moved;
- a new token keeps this model's fresh initialisation;
- a token that left the vocabulary has its row dropped;
- OOV bucket rows (after the tokens) carry over positionally;
- hashed features carry over as they are (same bucket count), since a bucket means the same
  thing in both runs.

The same pairing applies to the optimizer state of each row (FTRL accumulator and linear,
AdaGrad accumulator): without FTRL's ``linear``, its first update would recompute a carried
weight from zero and throw it away. Dense layers (and biases) are copied when the shapes
match. Anything without a counterpart keeps its fresh initialisation, and the report says so.

Deep towers (``train.deep_towers``) pair by index: tower k starts from the previous model's
tower k. A tower the previous model did not have starts from its tower k mod (its number of
towers): from a one-tower model, every tower is a copy of it. Copies rather than fresh
towers because the model predicts from the mean of its towers: the copies keep the first
warm-started model exactly as good as the one it comes from, where fresh towers, trained on
one new day only, would pull its mean down (and likely fail the gate). The copies part ways
from the first step, since each tower reads its own order of the data. Towers of the
previous model beyond the new one's number are dropped.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import tensorflow as tf

from trainer import model as model_lib
from transforms import paths


def read_vocabulary(path: str) -> list[bytes]:
    """Tokens of a TFT vocabulary file, one per line, in id order."""
    tokens = paths.read_bytes(path).split(b"\n")
    if tokens and tokens[-1] == b"":
        tokens.pop()
    return tokens


def token_row_map(old_tokens: list[bytes], new_tokens: list[bytes], old_oov: int,
                  new_oov: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Rows to copy (``new_rows[i] <- old_rows[i]``) and the counts for the report."""
    old_index = {token: i for i, token in enumerate(old_tokens)}
    pairs = [(new_row, old_index[token]) for new_row, token in enumerate(new_tokens)
             if token in old_index]
    remapped = len(pairs)
    oov_carried = min(old_oov, new_oov)
    pairs += [(len(new_tokens) + j, len(old_tokens) + j) for j in range(oov_carried)]
    new_rows = np.array([p[0] for p in pairs], dtype=np.int64)
    old_rows = np.array([p[1] for p in pairs], dtype=np.int64)
    counts = {"remapped": remapped, "new": len(new_tokens) - remapped,
              "dropped": len(old_tokens) - remapped, "oov_rows_carried": oov_carried}
    return new_rows, old_rows, counts


def _copy_rows(target: tf.Variable, source: tf.Variable, new_rows: np.ndarray,
               old_rows: np.ndarray) -> None:
    value = target.numpy()
    value[new_rows] = source.numpy()[old_rows]
    target.assign(value)


def _load_previous(previous: model_lib.ModelDir, log: Callable[[str], None]):
    """The previous run's model with its optimizer state, and the checkpoint it came from."""
    if not paths.exists(paths.join(previous.keras_model, model_lib.MODEL_SPEC_FILE)):
        raise FileNotFoundError(
            f"warm start: {previous.root} is not a finished training run (no "
            f"{previous.keras_model}/{model_lib.MODEL_SPEC_FILE}); pass the model_dir of a "
            f"run that completed")
    old_model = model_lib.load_model(previous.keras_model)
    checkpoint = previous.latest_checkpoint()
    if checkpoint:
        # The last checkpoint holds the final weights too, plus the optimizer state.
        status = model_lib.training_checkpoint(old_model).restore(checkpoint)
        status.assert_existing_objects_matched().expect_partial()
    else:
        log(f"warm start: {previous.checkpoints} has no checkpoint; optimizer state starts "
            f"fresh")
    return old_model, checkpoint


def _row_pairs(key: str, old_input: model_lib.ModelInput, new_input: model_lib.ModelInput,
               old_rows_total: int, previous: model_lib.ModelDir, vocab_dir: str):
    """How rows of one id-indexed table pair up, or a reason they cannot."""
    if new_input.vocab_name and old_input.vocab_name:
        old_path = previous.vocab_file(old_input.vocab_name)
        new_path = paths.join(vocab_dir, new_input.vocab_name)
        for path in (old_path, new_path):
            if not paths.exists(path):
                raise FileNotFoundError(f"warm start: vocabulary {path} is missing, so the rows "
                                        f"of {key} cannot be remapped by token")
        old_tokens, new_tokens = read_vocabulary(old_path), read_vocabulary(new_path)
        if len(old_tokens) + old_input.oov_buckets != old_rows_total:
            raise ValueError(f"warm start: {old_path} has {len(old_tokens)} tokens + "
                             f"{old_input.oov_buckets} OOV buckets, but the previous model's "
                             f"{key} has {old_rows_total} rows; that model_dir is inconsistent")
        return token_row_map(old_tokens, new_tokens, old_input.oov_buckets,
                             new_input.oov_buckets)
    if not new_input.vocab_name and not old_input.vocab_name:
        if old_input.cardinality != new_input.cardinality:
            return f"hash buckets changed ({old_input.cardinality} -> {new_input.cardinality})"
        rows = np.arange(new_input.cardinality, dtype=np.int64)
        return rows, rows, {"hashed_rows_carried": new_input.cardinality}
    return "changed between a vocabulary and hashing"


def _tower_sources(old_towers: int, new_towers: int) -> dict[str, str]:
    """Which previous tower each new one starts from, by part name (none without towers on
    either side)."""
    if not old_towers:
        return {}
    return {model_lib.tower_name(k): model_lib.tower_name(k % old_towers)
            for k in range(new_towers)}


def warm_start(model: model_lib.WideDeepModel, from_model_dir: str, vocab_dir: str, *,
               log: Callable[[str], None] = print) -> dict:
    """Initialises ``model`` (and its optimizers) from the run in ``from_model_dir``.

    ``vocab_dir`` holds this run's ``vocab_<feature>`` files. Returns the report (also
    logged): per vocabulary, counts of remapped / new / dropped tokens.
    """
    previous = model_lib.ModelDir(from_model_dir)
    old_model, checkpoint = _load_previous(previous, log)
    log(f"warm start: from {from_model_dir} "
        f"({paths.basename(checkpoint) if checkpoint else 'final weights'})")

    old_variables, new_variables = (model_lib.model_variables(old_model),
                                    model_lib.model_variables(model))
    old_slots, new_slots = model_lib.optimizer_slots(old_model), model_lib.optimizer_slots(model)
    old_tables, new_tables = model_lib.id_tables(old_model), model_lib.id_tables(model)
    report = {"from": from_model_dir, "checkpoint": checkpoint, "vocabularies": {},
              "hashed": {}, "copied": [], "fresh": {}, "towers": {}}
    pair_cache = {}
    towers = _tower_sources(len(old_model.towers), len(model.towers))
    for new_tower, old_tower in towers.items():
        if new_tower != old_tower:
            report["towers"][new_tower] = old_tower

    for key, variable in new_variables.items():
        part, _, rest = key.partition("/")
        old_key = f"{towers[part]}/{rest}" if part in towers else key
        old_variable = old_variables.get(old_key)
        if old_variable is None:
            report["fresh"][key] = "not in the previous model"
            continue
        if key in new_tables:
            new_input, old_input = new_tables[key], old_tables.get(old_key)
            if old_input is None:
                report["fresh"][key] = "not an id-indexed table in the previous model"
                continue
            if new_input.name not in pair_cache:
                pair_cache[new_input.name] = _row_pairs(key, old_input, new_input,
                                                        old_variable.shape[0], previous,
                                                        vocab_dir)
            pairs = pair_cache[new_input.name]
            if isinstance(pairs, str):
                report["fresh"][key] = pairs
                continue
            if old_variable.shape[1:] != variable.shape[1:]:
                report["fresh"][key] = (f"row width changed ({old_variable.shape[1]} -> "
                                        f"{variable.shape[1]})")
                continue
            new_rows, old_rows, counts = pairs
            section = "vocabularies" if new_input.vocab_name else "hashed"
            report[section][new_input.vocab_name or new_input.name] = counts
            copy = functools.partial(_copy_rows, new_rows=new_rows, old_rows=old_rows)
        else:
            if old_variable.shape != variable.shape:
                report["fresh"][key] = (f"shape changed ({old_variable.shape} -> "
                                        f"{variable.shape})")
                continue
            report["copied"].append(key)
            copy = lambda target, source: target.assign(source)  # noqa: E731
        # The variable, then each of its optimizer slots the previous model has too.
        for target, source in [(variable, old_variable)] + [
                (slot, old_slots.get(old_key, {}).get(name))
                for name, slot in new_slots.get(key, {}).items()]:
            if source is not None:
                copy(target, source)

    if report["towers"]:
        log("warm start: " + ", ".join(f"tower {new} from {old}"
                                       for new, old in report["towers"].items())
            + f" (the previous model has {len(old_model.towers)} deep tower(s))")
    for vocab_name, counts in report["vocabularies"].items():
        log(f"warm start: {vocab_name}: {counts['remapped']} tokens remapped, {counts['new']} "
            f"new, {counts['dropped']} dropped, {counts['oov_rows_carried']} OOV rows carried")
    for name, counts in report["hashed"].items():
        log(f"warm start: {name}: {counts['hashed_rows_carried']} hashed rows carried as they "
            f"are")
    fresh = "; ".join(f"{k}: {why}" for k, why in report["fresh"].items())
    log(f"warm start: {len(report['copied'])} other variables copied (dense layers, biases), "
        f"{len(report['fresh'])} left fresh" + (f" ({fresh})" if fresh else ""))
    return report
