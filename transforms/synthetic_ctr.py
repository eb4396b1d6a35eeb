"""A Criteo-shaped click log with planted signal, for judging a config nobody tuned.

The shape of the Criteo display-advertising log (Kaggle 2014), which public CTR work is
measured on::

    day       "YYYY-MM-DD" (rows spread evenly over `days` days; the last is eval)
    clicked   0/1, about 22% positives
    I1..I13   integer counts: heavy-tailed (log-normal), 0..millions, missing ("")
              in 0-45% of rows depending on the column
    C1..C26   8-hex-digit hashed categoricals; value frequencies are Zipf (exponent
              1.1) over 10..100,000 distinct values per column; missing ("") in 0-40%

Label: ``clicked ~ Bernoulli(sigmoid(logit))`` with

    logit = bias (set for a 22% base rate)
          + sum over 8 counts of a smooth, non-monotone function of log1p(count)
            (a bump, a step or a slope: quantile buckets catch all three), and a
            missing-value effect for 4 of them
          + per-value effects for 12 categoricals, N(0, s) with s in 0.2..0.6
          + per-pair effects for 4 categorical pairs (C1 x C2, C3 x C4, C9 x C10, C13 x C14):
            N(0, 0.8) per co-occurring pair of values: memorization a cross learns
          + noise: none (the true logit is the best possible score), all of it times
            SIGNAL_SCALE, so the true probability's AUC is about 0.80

The other 5 counts and 14 categoricals carry no signal, as in real logs. Everything
depends only on the seed, so a benchmark can regenerate the same data anywhere.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from transforms import paths
from transforms.synthetic import csv_bytes

COUNTS = tuple(f"I{i}" for i in range(1, 14))
CATEGORICALS = tuple(f"C{i}" for i in range(1, 27))
LABEL = "clicked"
COLUMNS = ("day", LABEL) + COUNTS + CATEGORICALS
PAIRS = (("C1", "C2"), ("C3", "C4"), ("C9", "C10"), ("C13", "C14"))
POSITIVE_RATE = 0.22
_PAIR_TABLE = 1 << 20
# Shrinks the planted effects to real click-log strength: the true probability's AUC is
# about 0.80 (as the best published models on Criteo), not the 0.89 of the raw sum.
SIGNAL_SCALE = 0.55


def _world(seed: int) -> dict:
    rng = np.random.default_rng([seed, 1])
    cardinality = np.unique(np.round(np.geomspace(10, 100_000, 26)).astype(int))
    cardinality = np.resize(cardinality, 26)
    rng.shuffle(cardinality)
    world = {
        "count_mu": rng.uniform(0.5, 6.0, 13), "count_sigma": rng.uniform(1.0, 2.5, 13),
        "count_missing": rng.choice([0.0, 0.0, 0.05, 0.2, 0.45], 13),
        "count_shape": rng.integers(0, 3, 13),  # bump, step, slope
        "count_weight": np.where(np.arange(13) < 8, rng.uniform(0.3, 0.8, 13), 0.0),
        "count_missing_effect": np.where(np.arange(13) < 4, rng.normal(0, 0.5, 13), 0.0),
        "cardinality": cardinality,
        "cat_missing": rng.choice([0.0, 0.0, 0.0, 0.1, 0.4], 26),
        "cat_scale": np.where(np.arange(26) < 12, rng.uniform(0.2, 0.6, 26), 0.0),
        "pair_effects": rng.normal(0, 0.8, _PAIR_TABLE),
        "hash_salt": rng.integers(1, 2**31, 26),
    }
    rng_effects = np.random.default_rng([seed, 2])
    world["cat_effects"] = [rng_effects.normal(0, 1, int(n)) for n in cardinality]
    return world


def _count_signal(shape: int, z: np.ndarray) -> np.ndarray:
    """A function of the standardised log count with std around 1."""
    if shape == 0:
        return 2.0 * np.exp(-z ** 2) - 1.2   # a bump: neither end is good
    if shape == 1:
        return np.where(z > 0.5, 1.0, -0.5)  # a step
    return np.clip(z, -2, 2)                  # a slope


def _zipf_ids(rng: np.random.Generator, n: int, cardinality: int) -> np.ndarray:
    ranks = np.arange(1, cardinality + 1, dtype=np.float64)
    weights = ranks ** -1.1
    return rng.choice(cardinality, size=n, p=weights / weights.sum())


def _hex_tokens(ids: np.ndarray, salt: int) -> np.ndarray:
    hashed = (ids.astype(np.uint64) * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(2**32)
    return np.char.mod("%08x", hashed.astype(np.int64))


def generate(rows: int, *, days: int = 7, seed: int = 0, start_date: str = "2026-01-01"):
    """(columns as a dict of numpy arrays of strings/ints, true click probability)."""
    world = _world(seed)
    rng = np.random.default_rng([seed, 3, rows])
    logit = np.zeros(rows)
    data: dict[str, np.ndarray] = {}
    for j, name in enumerate(COUNTS):
        counts = np.floor(rng.lognormal(world["count_mu"][j], world["count_sigma"][j], rows))
        z = (np.log1p(counts) - world["count_mu"][j]) / world["count_sigma"][j]
        missing = rng.random(rows) < world["count_missing"][j]
        logit += np.where(missing, world["count_missing_effect"][j],
                          world["count_weight"][j] * _count_signal(world["count_shape"][j], z))
        data[name] = np.where(missing, "", counts.astype(np.int64).astype(str))
    ids = {}
    for k, name in enumerate(CATEGORICALS):
        cardinality = int(world["cardinality"][k])
        value_ids = _zipf_ids(rng, rows, cardinality)
        missing = rng.random(rows) < world["cat_missing"][k]
        ids[name] = np.where(missing, -1, value_ids)
        logit += np.where(missing, 0.0, world["cat_scale"][k] * world["cat_effects"][k][value_ids])
        data[name] = np.where(missing, "", _hex_tokens(value_ids, int(world["hash_salt"][k])))
    for a, b in PAIRS:
        both = (ids[a] >= 0) & (ids[b] >= 0)
        key = (ids[a].astype(np.int64) * 1_000_003 + ids[b]) % _PAIR_TABLE
        logit += np.where(both, world["pair_effects"][key], 0.0)
    centred = SIGNAL_SCALE * (logit - logit.mean())
    logit = centred + _bias_for(centred, POSITIVE_RATE)
    probability = 1.0 / (1.0 + np.exp(-logit))
    data[LABEL] = (rng.random(rows) < probability).astype(int).astype(str)
    start = dt.date.fromisoformat(start_date)
    day_index = np.sort(rng.integers(0, days, rows))
    data["day"] = np.array([(start + dt.timedelta(days=int(d))).isoformat()
                            for d in range(days)])[day_index]
    return data, probability


def _bias_for(centred_logit: np.ndarray, rate: float) -> float:
    """The bias that gives the wanted mean probability (bisection)."""
    low, high = -10.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(centred_logit + mid)))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def write_csv(path: str, rows: int, *, days: int = 7, seed: int = 0) -> np.ndarray:
    """Writes the log as one CSV with a header; returns the true click probabilities."""
    data, probability = generate(rows, days=days, seed=seed)
    paths.write_bytes(path, csv_bytes(pa.table({c: data[c] for c in COLUMNS})))
    return probability
