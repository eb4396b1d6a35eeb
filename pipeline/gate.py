"""Evaluation and blessing: is the candidate good enough, and better than what serves now?

Both models are scored on the *same raw* eval examples through their own serving
signatures, so each applies its own transform graph (yesterday's vocabularies for the
baseline, today's for the candidate) exactly as serving will.

Metrics are computed here with numpy rather than TensorFlow Model Analysis: TFMA 0.52
installs beside TFT only by downgrading pandas, and its Beam job would add a fixed
half-minute per model to every nightly run, for four numbers per slice that are exact
and cheap to compute directly (AUC by ranks, log loss, calibration, counts).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Mapping, Sequence

import numpy as np

from transforms import config as cfg
from transforms import paths

MIN_SLICE_ROWS = 50  # smaller slices are reported without AUC (too noisy to read)
MAX_SLICES_PER_COLUMN = 20


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula, ties averaged (nan if one class)."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(labels: np.ndarray, scores: np.ndarray, points: int = 200):
    """(false positive rates, true positive rates) at up to `points` thresholds, for plots."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    hits = labels[order]
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~hits) / max((~hits).sum(), 1)])
    keep = np.unique(np.linspace(0, len(tpr) - 1, min(points, len(tpr))).astype(int))
    return fpr[keep], tpr[keep]


def roc_points(labels: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """:func:`roc_curve` as the JSON the report plots."""
    fpr, tpr = roc_curve(labels, scores)
    return {"fpr": fpr.round(5).tolist(), "tpr": tpr.round(5).tolist()}


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positive_rate = float(labels.mean()) if len(labels) else float("nan")
    mean_prediction = float(probabilities.mean()) if len(labels) else float("nan")
    return {
        "examples": int(len(labels)),
        "auc": roc_auc(labels, probabilities) if len(labels) >= 2 else float("nan"),
        "log_loss": log_loss(labels, probabilities) if len(labels) else float("nan"),
        "accuracy": float(np.mean((probabilities >= 0.5) == (labels >= 0.5))) if len(labels) else float("nan"),
        "positive_rate": positive_rate,
        "mean_prediction": mean_prediction,
        "calibration": mean_prediction / positive_rate if positive_rate else float("nan"),
    }


def sliced_metrics(labels: np.ndarray, probabilities: np.ndarray,
                   slices: Mapping[str, Sequence[str]]) -> dict[str, dict[str, dict]]:
    """Metrics per value of each slice column (the most frequent values first)."""
    out: dict[str, dict[str, dict]] = {}
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    for column, values in slices.items():
        values = np.asarray(values, dtype=object)
        names, counts = np.unique(values, return_counts=True)
        per_value = {}
        for name in names[np.argsort(-counts, kind="stable")][:MAX_SLICES_PER_COLUMN]:
            mask = values == name
            m = metrics(labels[mask], probabilities[mask])
            if m["examples"] < MIN_SLICE_ROWS:
                m["auc"] = float("nan")
            per_value[str(name)] = m
        out[column] = per_value
    return out


@dataclasses.dataclass(frozen=True)
class Decision:
    blessed: bool
    reason: str
    checks: tuple[str, ...]

    def to_json(self) -> dict:
        return {"blessed": self.blessed, "reason": self.reason, "checks": list(self.checks)}


def decide(candidate: Mapping[str, float], baseline: Mapping[str, float] | None,
           gate: cfg.GateParams, train_positive_rate: float | None = None) -> Decision:
    """Absolute thresholds always; relative ones when a blessed baseline exists.

    `train_positive_rate` (the label mean the model was trained on) goes into a calibration
    failure's reason: an eval day with fewer positives than the train days miscalibrates a
    good model, and a person must be able to tell that from a broken one."""
    failures, passes = [], []

    def check(ok: bool, text_ok: str, text_fail: str) -> None:
        (passes if ok else failures).append(text_ok if ok else text_fail)

    auc, loss, calibration = candidate["auc"], candidate["log_loss"], candidate["calibration"]
    examples, positive_rate = candidate.get("examples"), candidate.get("positive_rate")
    if examples == 0 or positive_rate in (0.0, 1.0):
        what = ("no examples" if examples == 0 else
                f"only {'positive' if positive_rate == 1.0 else 'negative'} examples "
                f"({examples} rows)")
        return Decision(False, f"the eval split has {what}, so AUC and calibration are "
                               "undefined and the candidate cannot be judged; check [split] "
                               "or the eval input", ())
    if not all(np.isfinite([auc, loss, calibration])):
        return Decision(False, f"candidate metrics are not finite (AUC {auc}, log loss {loss}, "
                               f"calibration {calibration})", ())
    check(auc >= gate.min_auc, f"AUC {auc:.4f} >= {gate.min_auc}",
          f"AUC {auc:.4f} < minimum {gate.min_auc}")
    error = abs(calibration - 1.0)
    rates = ""
    if train_positive_rate and positive_rate is not None:
        rates = (f" (positive rate {positive_rate:.3f} in eval vs {train_positive_rate:.3f} "
                 "in train")
        drift = abs(positive_rate / train_positive_rate - 1.0)
        rates += (f": the eval data's rate moved {drift:.0%}; drift, not necessarily a "
                  "broken model)" if drift > gate.max_calibration_error / 2 else ")")
    check(error <= gate.max_calibration_error,
          f"calibration {calibration:.3f} within 1 ± {gate.max_calibration_error}",
          f"calibration {calibration:.3f} outside 1 ± {gate.max_calibration_error}{rates}")
    if baseline is not None:
        b_auc, b_loss = baseline["auc"], baseline["log_loss"]
        check(auc >= b_auc - gate.max_auc_drop,
              f"AUC {auc:.4f} >= baseline {b_auc:.4f} - {gate.max_auc_drop}",
              f"AUC {auc:.4f} < baseline {b_auc:.4f} - {gate.max_auc_drop}")
        check(loss <= b_loss + gate.max_logloss_increase,
              f"log loss {loss:.4f} <= baseline {b_loss:.4f} + {gate.max_logloss_increase}",
              f"log loss {loss:.4f} > baseline {b_loss:.4f} + {gate.max_logloss_increase}")
    if failures:
        return Decision(False, "; ".join(failures), tuple(passes))
    first = "" if baseline is not None else "first model, no baseline; "
    return Decision(True, first + "; ".join(passes), tuple(passes))


# ---------------------------------------------------------------------------------------
# Scoring the raw eval split with an export


EVAL_BATCH = 2048


@dataclasses.dataclass
class RawEval:
    """The raw eval examples of a transform output, with what evaluation needs from them.

    The examples themselves stay in their files and are streamed in batches (an eval split
    of millions of rows is gigabytes of serialized examples); only the labels and slice
    values, a few bytes a row, are held."""
    files: list[str]
    labels: np.ndarray
    slices: dict[str, list[str]]
    limit: int = 0  # the first `limit` examples only (0: all)

    def batches(self, batch_size: int = EVAL_BATCH) -> Iterator[list[bytes]]:
        import tensorflow as tf

        dataset = tf.data.TFRecordDataset(self.files, compression_type="GZIP")
        if self.limit:
            dataset = dataset.take(self.limit)
        for batch in dataset.batch(batch_size).as_numpy_iterator():
            yield list(batch)

    @functools.cached_property
    def serialized(self) -> list[bytes]:
        """Every example in memory: for a limited sample (the dry run's)."""
        return [example for batch in self.batches() for example in batch]


def read_raw_eval(config: cfg.FeatureConfig, transform_dir: str, limit: int = 0) -> RawEval:
    """The eval split's labels and slice values, read in one streaming pass."""
    import tensorflow as tf

    files = paths.glob(paths.join(transform_dir, "eval_raw-*.tfrecord.gz"))
    if not files:
        raise FileNotFoundError(f"{transform_dir}: no eval_raw-*.tfrecord.gz (not a transform "
                                "output?)")
    spec = {config.label.column: tf.io.FixedLenFeature([], tf.int64)}
    spec.update({s: tf.io.FixedLenFeature([], tf.string, default_value="") for s in config.slices})
    raw_eval = RawEval(files, np.zeros([0], np.int64), {s: [] for s in config.slices}, limit)
    labels = []
    for batch in raw_eval.batches():
        parsed = tf.io.parse_example(tf.constant(batch), spec)
        labels.append(parsed[config.label.column].numpy())
        for s in config.slices:
            raw_eval.slices[s] += [v.decode("utf-8", "replace") for v in parsed[s].numpy()]
    if labels:
        raw_eval.labels = np.concatenate(labels)
    return raw_eval


def evaluate_export(export_dir: str, raw_eval: RawEval) -> tuple[dict, np.ndarray]:
    """(metrics with per-slice metrics and ROC points, probabilities) of an export."""
    from trainer.export import load_predict_fn

    predict = load_predict_fn(export_dir)  # the batches are already the size it takes
    probabilities = np.concatenate([predict(batch) for batch in raw_eval.batches()]
                                   or [np.zeros([0], np.float32)])
    result = metrics(raw_eval.labels, probabilities)
    result["slices"] = sliced_metrics(raw_eval.labels, probabilities, raw_eval.slices)
    result["roc"] = roc_points(raw_eval.labels, probabilities)
    return result, probabilities
