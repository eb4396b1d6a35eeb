"""Data validation before training: a schema, anomalies and drift that stop a broken night.

The usual bad night is upstream: a column that arrives empty, a unit change, a new client
flooding a categorical with unseen values, an export cut short or a join that doubled the
rows. TFX catches these with TFDV's ExampleValidator, which has no wheels for this stack;
this module is the part a nightly retrain needs, over the statistics the transform job
already computed (:mod:`pipeline.column_stats`, no second pass over the data):

- **schema** checks: a column's missing share past its allowance, values outside a closed
  domain or a numeric range (:func:`infer_schema` writes one a person can edit);
- **drift** against the last blessed run: TFDV's L-infinity distance of categorical value
  shares, the Jensen-Shannon divergence of numeric distributions, and the growth in the
  share of values outside the blessed model's vocabulary;
- **volume**: today's rows against the median of the recent runs'.

Every check is a pure function of statistics, so the same measures serve ``widedeep score``
(skew against the serving model's training data). An anomaly is named ``name:column``
(``volume`` alone); ``[validation] allow_anomalies`` or ``--allow-anomalies`` accepts one by
that name or by its bare name.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Iterable, Mapping, Sequence

import numpy as np

from pipeline.run_dir import RunDir, WorkDir
from transforms import config as cfg
from transforms import paths

SCHEMA_FILE = "schema.json"
SCHEMA_VERSION = 1
# A column with more values is left open; column_stats lists no more (its TOP_VALUES, not
# imported: that module loads Beam, and `widedeep history` and the report load this one).
CLOSED_DOMAIN_MAX_VALUES = 20
MISSING_ALLOWANCE = 0.05  # inferred allowance: the share seen, plus at least this much
# A rare stray value in a closed domain (one row in a thousand) is noise, not a new client.
OUTSIDE_DOMAIN_ALLOWANCE = 0.001


@dataclasses.dataclass(frozen=True)
class Anomaly:
    name: str       # missing_column | missing_values | out_of_domain | out_of_range |
                    # drift | unseen_values | volume
    column: str     # "" for the whole dataset (volume)
    value: float
    threshold: float
    reason: str

    @property
    def key(self) -> str:
        return f"{self.name}:{self.column}" if self.column else self.name

    def allowed_by(self, allowed: Iterable[str]) -> bool:
        allowed = set(allowed)
        return self.key in allowed or self.name in allowed

    def to_json(self) -> dict:
        return {"anomaly": self.key, **dataclasses.asdict(self)}


class SchemaError(ValueError):
    """No statistics to infer a schema from."""


class DataAnomalies(RuntimeError):
    """The night's data is unlike what the model was built on; the run stops before training."""

    def __init__(self, anomalies: Sequence[Anomaly], record: str):
        self.anomalies = list(anomalies)
        self.record = record
        super().__init__(f"{len(self.anomalies)} data anomal{'y' if len(anomalies) == 1 else 'ies'}"
                         f" ({', '.join(a.key for a in self.anomalies)}); details in {record}")


# ---------------------------------------------------------------------------------------
# Measures


def categorical_shares(column: Mapping) -> tuple[dict[str, float], float]:
    """Value → share of the column's values, and the largest share a value missing from
    that list can have (0 when the list holds every value)."""
    total = column.get("tokens") if "tokens" in column else round(
        column["rows"] * (1 - (column.get("missing_share") or 0)))
    if not total:
        return {}, 0.0
    shares = {t["value"]: t["count"] / total for t in column.get("top_values", [])}
    complete = (column.get("top_counts_over_by_at_most", 0) == 0
                and column.get("distinct", 0) <= len(shares))
    return shares, 0.0 if complete else min(shares.values(), default=1.0)


def l_infinity(current: Mapping, previous: Mapping) -> float:
    """TFDV's categorical drift: the largest change in any value's share. Values beyond a
    long-tailed column's top list count by the least they can have moved."""
    today, today_unlisted = categorical_shares(current)
    before, before_unlisted = categorical_shares(previous)
    distance = 0.0
    for value in set(today) | set(before):
        if value in today and value in before:
            change = abs(today[value] - before[value])
        elif value in today:
            change = max(0.0, today[value] - before_unlisted)
        else:
            change = max(0.0, before[value] - today_unlisted)
        distance = max(distance, change)
    return distance


def _cdf(quantiles: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The distribution function that the equally spaced quantiles (min … max) describe,
    linear between them; a run of equal quantiles is a point mass."""
    levels = np.linspace(0.0, 1.0, len(quantiles))
    index = np.searchsorted(quantiles, x, side="right") - 1
    out = np.where(x >= quantiles[-1], 1.0, 0.0)
    inside = (index >= 0) & (x < quantiles[-1])
    i = index[inside]
    width = quantiles[i + 1] - quantiles[i]
    out[inside] = levels[i] + (x[inside] - quantiles[i]) / width * (levels[i + 1] - levels[i])
    return out


def jensen_shannon(current: Mapping, previous: Mapping) -> float | None:
    """The Jensen-Shannon divergence (base 2, so 0 … 1) of two numeric columns' distributions,
    each as described by its quantiles; bins are the union of both quantile sets."""
    today = np.asarray(current.get("quantiles") or [], float)
    before = np.asarray(previous.get("quantiles") or [], float)
    if len(today) < 2 or len(before) < 2:
        return None
    edges = np.unique(np.concatenate([today, before]))
    p, q = (np.diff(np.concatenate([[0.0], _cdf(qs, edges), [1.0]])) for qs in (today, before))
    mixture = (p + q) / 2

    def kl(a):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / mixture[mask])))

    return round(max(0.0, (kl(p) + kl(q)) / 2), 6)


def drift(config: cfg.FeatureConfig, current: Mapping[str, Mapping],
          previous: Mapping[str, Mapping]) -> dict[str, dict]:
    """Per feature column in both: {measure, value, threshold} (value None when unmeasurable)."""
    params = config.validation
    table = {}
    for column in config.feature_columns:
        now, before = current.get(column.name), previous.get(column.name)
        if not now or not before or now.get("kind") != before.get("kind"):
            continue
        if column.is_categorical:
            measure, value = "L-infinity", round(l_infinity(now, before), 6)
            threshold = params.max_categorical_drift
        else:
            measure, value = "Jensen-Shannon", jensen_shannon(now, before)
            threshold = params.max_numeric_drift
        if column.max_drift is not None:
            threshold = column.max_drift
        table[column.name] = {"measure": measure, "value": value, "threshold": threshold}
    return table


# ---------------------------------------------------------------------------------------
# Schema


def infer_schema(column_statistics: Mapping[str, Mapping], source: str = "") -> dict:
    """A schema from one run's statistics, meant to be read, edited and checked in: each
    column's kind and missing allowance; for a categorical with at most 20 values, its
    domain (two values at least); for a numeric column, the bounds its values kept to (0
    below, 1 above)."""
    columns = {}
    for name, stats in column_statistics.items():
        kind = stats["kind"]
        if kind == cfg.LABEL:
            continue
        seen = stats.get("missing_share") or 0.0
        entry: dict = {"kind": kind,
                       "max_missing_share": round(min(1.0, seen + max(seen, MISSING_ALLOWANCE)), 4)}
        if kind in (cfg.CATEGORICAL, cfg.MULTIVALENT):
            shares, unlisted = categorical_shares(stats)
            # One value says nothing of a domain (a day-of-week column on a one-day run).
            if not unlisted and 2 <= len(shares) <= CLOSED_DOMAIN_MAX_VALUES:
                entry["domain"] = sorted(shares)
                entry["max_share_outside_domain"] = OUTSIDE_DOMAIN_ALLOWANCE
        elif kind == cfg.NUMERIC and stats.get("min") is not None:
            if stats["min"] >= 0:
                entry["min"] = 0.0
                if stats["max"] <= 1:
                    entry["max"] = 1.0
        columns[name] = entry
    return {"version": SCHEMA_VERSION, "inferred_from": source, "columns": columns}


def check_schema(current: Mapping[str, Mapping], schema: Mapping) -> list[Anomaly]:
    anomalies = []
    for name, rule in schema.get("columns", {}).items():
        stats = current.get(name)
        if stats is None:
            anomalies.append(Anomaly("missing_column", name, 1.0, 0.0,
                                     f"column '{name}' is in the schema but not in the data"))
            continue
        missing = stats.get("missing_share") or 0.0
        allowance = rule.get("max_missing_share", 1.0)
        if missing > allowance:
            anomalies.append(Anomaly(
                "missing_values", name, missing, allowance,
                f"column '{name}' is {missing:.1%} missing (the schema allows {allowance:.1%})"
                + ("; it arrived empty" if missing >= 1 else "")))
        if "domain" in rule:
            anomalies += _domain_anomalies(name, stats, rule["domain"],
                                           rule.get("max_share_outside_domain", 0.0))
        low, high = rule.get("min"), rule.get("max")
        if stats.get("min") is not None and (
                (low is not None and stats["min"] < low) or (high is not None and stats["max"] > high)):
            anomalies.append(Anomaly(
                "out_of_range", name, stats["min"] if low is not None and stats["min"] < low
                else stats["max"], low if low is not None and stats["min"] < low else high,
                f"column '{name}' ranges {stats['min']:g} … {stats['max']:g}, outside the "
                f"schema's [{'-inf' if low is None else f'{low:g}'}, "
                f"{'inf' if high is None else f'{high:g}'}]"))
    return anomalies


def _domain_anomalies(name: str, stats: Mapping, domain: Sequence[str],
                      allowance: float) -> list[Anomaly]:
    """Values outside a closed domain beyond its allowance; or values beyond the top list
    at all (more distinct values than the statistics list: the domain has grown)."""
    shares, _ = categorical_shares(stats)
    outside = {v: s for v, s in shares.items() if v not in set(domain)}
    unlisted = max(0, stats.get("distinct", 0) - len(shares))
    share = sum(outside.values())
    if share <= allowance and not unlisted:
        return []
    examples = ", ".join(repr(v) for v in sorted(outside, key=outside.get, reverse=True)[:3])
    return [Anomaly("out_of_domain", name, round(share, 6), allowance,
                    f"column '{name}' has {len(outside) + unlisted} value(s) outside its "
                    f"domain of {len(domain)} ({examples or 'beyond its top values'}"
                    f"{'' if not unlisted else ', …'}), {share:.1%} of its values at least")]


# ---------------------------------------------------------------------------------------
# The night's checks


def over_threshold(table: Mapping[str, Mapping]) -> dict[str, Mapping]:
    """The columns of a drift table (:func:`drift`) whose drift passes their threshold."""
    return {name: entry for name, entry in table.items()
            if entry["value"] is not None and entry["value"] > entry["threshold"]}


def check_drift(table: Mapping[str, Mapping]) -> list[Anomaly]:
    return [Anomaly("drift", name, entry["value"], entry["threshold"],
                    f"column '{name}' drifted: {entry['measure']} {entry['value']:.3f} "
                    f"against the last blessed run (threshold {entry['threshold']:g})")
            for name, entry in over_threshold(table).items()]


def unseen_growth(current: Mapping[str, Mapping], previous: Mapping[str, Mapping]) -> dict:
    """Per column: the share of its values outside the blessed model's vocabulary, today
    and on the blessed run (against its own predecessor)."""
    return {name: {"today": stats["unseen_share"],
                   "blessed_run": (previous.get(name) or {}).get("unseen_share")}
            for name, stats in current.items() if stats.get("unseen_share") is not None}


def check_unseen(growth: Mapping[str, Mapping], limit: float) -> list[Anomaly]:
    return [Anomaly("unseen_values", name, round(g["today"] - g["blessed_run"], 6), limit,
                    f"column '{name}': {g['today']:.1%} of its values are not in the blessed "
                    f"model's vocabulary, up from {g['blessed_run']:.1%} (allowed: "
                    f"+{limit:.0%})")
            for name, g in growth.items()
            if g["blessed_run"] is not None and g["today"] - g["blessed_run"] > limit]


def check_volume(rows: int, recent_rows: Sequence[int],
                 params: cfg.ValidationParams) -> tuple[dict | None, list[Anomaly]]:
    if not recent_rows:
        return None, []
    usual = statistics.median(recent_rows)
    ratio = rows / usual if usual else float("inf")
    volume = {"rows": rows, "usual_rows": usual, "runs": len(recent_rows),
              "ratio": round(ratio, 4)}
    if params.min_volume_ratio <= ratio <= params.max_volume_ratio:
        return volume, []
    low = ratio < params.min_volume_ratio
    return volume, [Anomaly(
        "volume", "", round(ratio, 4),
        params.min_volume_ratio if low else params.max_volume_ratio,
        f"{rows} rows, {ratio:.2f}× the median of the last {len(recent_rows)} run(s) ({usual:g});"
        f" {'a broken or partial export?' if low else 'duplicated rows (a join)?'} "
        f"(allowed {params.min_volume_ratio:g}× … {params.max_volume_ratio:g}×)")]


def validate(config: cfg.FeatureConfig, current: Mapping[str, Mapping], *,
             schema: Mapping | None, previous: Mapping[str, Mapping] | None,
             recent_rows: Sequence[int], allowed: Iterable[str] = ()) -> dict:
    """Every check of one night; the record that validation.json holds."""
    params = config.validation
    table = drift(config, current, previous) if previous else {}
    growth = unseen_growth(current, previous or {})
    volume, volume_anomalies = check_volume(_rows(current), recent_rows, params)
    anomalies = ((check_schema(current, schema) if schema else []) + check_drift(table)
                 + check_unseen(growth, params.max_unseen_increase) + volume_anomalies)
    allowed = [*params.allow_anomalies, *allowed]
    return {"schema": bool(schema), "compared_with_blessed_run": bool(previous),
            "drift": table, "unseen": growth, "volume": volume,
            "anomalies": [{**a.to_json(), "allowed": a.allowed_by(allowed)} for a in anomalies],
            "allowed_by": sorted(set(allowed))}


def stopping(record: Mapping) -> list[Anomaly]:
    """The anomalies of a validation record that stop the run (those not allowed)."""
    return [Anomaly(**{k: a[k] for k in ("name", "column", "value", "threshold", "reason")})
            for a in record["anomalies"] if not a["allowed"]]


def _rows(current: Mapping[str, Mapping]) -> int:
    return max((c["rows"] for c in current.values()), default=0)


# ---------------------------------------------------------------------------------------
# Where the references live


def read_stats(run: RunDir) -> dict | None:
    return paths.read_json(run.path(RunDir.COLUMN_STATS))  # None when there are none


def blessed_runs(work: WorkDir, current: str) -> list[RunDir]:
    """Runs other than `current` that published a model, newest first."""
    return [run for run in work.other_runs(current) if (run.manifest() or {}).get("blessed")]


def recent_row_counts(work: WorkDir, current: str, runs: int) -> list[int]:
    """Rows of the last `runs` runs other than `current` whose data passed validation."""
    counts = []
    for run in work.other_runs(current):
        if len(counts) >= runs:
            break
        stages = (run.manifest() or {}).get("stages", {})
        stats = read_stats(run)
        if stats and stages.get("validate", {}).get("outcome") in (None, "done"):
            counts.append(_rows(stats))
    return counts


def schema_path(config: cfg.FeatureConfig, work: WorkDir) -> str:
    """The config's schema file (relative to the config), else the work dir's."""
    if config.validation.schema:
        return paths.join(paths.dirname(config.source) or ".", config.validation.schema)
    return paths.join(work.root, SCHEMA_FILE)


def schema_from_run(work_dir: str, run_id: str | None = None) -> tuple[dict, str]:
    """A schema inferred from a run's statistics: `run_id`'s, else the newest blessed run's,
    else the newest run's that has them; and which run that was."""
    work = WorkDir(work_dir)
    if run_id:
        candidates = [work.run(run_id)]
    else:
        candidates = blessed_runs(work, current="") + list(reversed(work.runs()))
    for run in candidates:
        stats = read_stats(run)
        if stats:
            source = f"run {run.run_id}"
            return infer_schema(stats, source), source
    where = f"run {run_id} ({work.run(run_id).path(RunDir.COLUMN_STATS)})" if run_id else \
        f"any run in {work_dir}"
    raise SchemaError(f"no column statistics in {where}; run `widedeep run` first")


def vocabularies(config: cfg.FeatureConfig, transform_dir: str) -> dict[str, list[bytes]]:
    """The vocabulary of each categorical column in a transform output (a blessed run's), to
    count today's unseen values against. Columns it has no vocabulary for are left out."""
    import tensorflow_transform as tft  # only the transform stage needs it; seconds to import

    output = tft.TFTransformOutput(transform_dir)
    out = {}
    for column in config.feature_columns:
        if not column.is_categorical or column.hash_buckets:
            continue
        try:
            out[column.name] = output.vocabulary_by_name(column.vocab_name)
        except (ValueError, OSError, KeyError):  # not in that run's config
            continue
    return out


def summary(record: Mapping) -> str:
    """One line: what the night's data was compared with and how far it moved."""
    parts = []
    if record["drift"]:
        name, entry = max(record["drift"].items(),  # the nearest to a threshold it can pass
                          key=lambda kv: ((kv[1]["threshold"] < 1),
                                          (kv[1]["value"] or 0) / (kv[1]["threshold"] or 1e-9)))
        parts.append(f"{len(record['drift'])} column(s) compared with run "
                     f"{record['blessed_run']}, nearest its threshold {name} {entry['value']:.3f} "
                     f"({entry['measure']}, threshold {entry['threshold']:g})")
    else:
        parts.append("no blessed run to compare with yet")
    if record["volume"]:
        parts.append(f"{record['volume']['ratio']:.2f}× the usual rows")
    parts.append(f"schema {'checked' if record['schema'] else 'not yet captured'}")
    allowed = [a["anomaly"] for a in record["anomalies"] if a["allowed"]]
    parts.append(f"allowed: {', '.join(allowed)}" if allowed else "no anomalies")
    return "; ".join(parts)
