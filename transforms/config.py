"""The feature config: the one place that says what the columns are.

A TOML file is parsed once (stdlib ``tomllib``) into frozen dataclasses and validated
as a whole, so a mistake fails before any Beam or TF work starts, with a message that
names the file and the key. Every later stage (transform, trainer, gate, serving)
derives its feature lists from a :class:`FeatureConfig`; none keeps its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from pathlib import Path
from typing import Any, Mapping

CATEGORICAL = "categorical"
MULTIVALENT = "multivalent"
NUMERIC = "numeric"
KEY = "key"          # kept raw for splitting, slicing and ranking queries; not a model input
IGNORE = "ignore"    # present in the data, dropped after parsing
LABEL = "label"      # set by [label], never written in [columns]
COLUMN_KINDS = (CATEGORICAL, MULTIVALENT, NUMERIC, KEY, IGNORE)


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a column kind means to every stage; each derives its own types from this table
    (TF feature specs in transforms/features.py, the Arrow layout and Parquet checks in
    pipeline/io.py, model inputs in trainer/model.py)."""
    value: str          # each value after parsing: "bytes", "float" or "int"
    multivalent: bool   # a list of tokens per row (else exactly one value)
    feature: bool       # may feed the model ([model] wide / deep)
    categorical: bool   # becomes ids (vocabulary or hashing)
    row_key: bool       # one string per row: a split key, a slice, a query column


KINDS = {
    CATEGORICAL: Kind("bytes", multivalent=False, feature=True, categorical=True, row_key=True),
    MULTIVALENT: Kind("bytes", multivalent=True, feature=True, categorical=True, row_key=False),
    NUMERIC: Kind("float", multivalent=False, feature=True, categorical=False, row_key=False),
    KEY: Kind("bytes", multivalent=False, feature=False, categorical=False, row_key=True),
    IGNORE: Kind("bytes", multivalent=False, feature=False, categorical=False, row_key=False),
    LABEL: Kind("int", multivalent=False, feature=False, categorical=False, row_key=False),
}
INPUT_FORMATS = ("csv", "parquet", "tfrecord")
SPLIT_METHODS = ("hash", "day", "eval_input")
MODEL_TYPES = ("wide_deep", "wide", "deep")


class ConfigError(ValueError):
    """A feature config is wrong; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    format: str = "csv"
    delimiter: str = ","
    header: bool = True
    # Explicit column order for header-less CSV; with a header the file's own order is used.
    columns: tuple[str, ...] = ()
    # Lines to skip at the top of each file besides the header (e.g. adult.test's banner).
    skip_lines: int = 0
    # Lines that start with this are not rows, wherever they are (adult.test's "|1x3 Cross
    # validator" banner); "" reads every line.
    comment_prefix: str = ""
    # Strings that mean "missing" in a categorical field (e.g. UCI Adult's "?").
    missing_values: tuple[str, ...] = ()
    # Characters stripped around every field (Adult's ", " separator leaves a space).
    strip: bool = True
    # A longer field is garbage (a runaway quote, a binary blob), not a category.
    max_field_chars: int = 65536


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    column: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str
    # categorical / multivalent: either a vocabulary (paper's min-count threshold) or hashing.
    vocab_min_count: int = 1
    oov_buckets: int = 1
    hash_buckets: int = 0
    separator: str = "|"
    # numeric: quantile buckets mapped to [0, 1]; optional log1p and clipping first.
    quantile_buckets: int = 10
    log: bool = False
    clip: tuple[float, float] | None = None
    default: float = 0.0
    # Data validation: this column's drift threshold, over [validation]'s for its kind.
    max_drift: float | None = None

    @property
    def kind_info(self) -> Kind:
        return KINDS[self.kind]

    @property
    def is_categorical(self) -> bool:
        return self.kind_info.categorical

    @property
    def vocab_name(self) -> str:
        """Stable vocabulary file name, shared by TFT, warm start and humans."""
        return f"vocab_{self.name}"


@dataclasses.dataclass(frozen=True)
class CrossSpec:
    name: str
    columns: tuple[str, ...]
    vocab_min_count: int = 1
    oov_buckets: int = 1
    hash_buckets: int = 0

    @property
    def vocab_name(self) -> str:
        return f"vocab_{self.name}"


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    method: str = "hash"
    key: str = ""
    eval_fraction: float = 0.1
    # method = "day": rows whose day column is among the last `eval_days` days go to eval.
    day_column: str = ""
    eval_days: int = 1
    # Carved from the train split (by the key's hash, else the row's): picks the epoch and
    # tunes hyperparameters without ever looking at eval. 0 = none.
    validation_fraction: float = 0.1


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Typed training hyperparameters; saved as JSON next to the model they produced."""
    model_type: str = "wide_deep"
    hidden_units: tuple[int, ...] = (1024, 512, 256)
    embedding_dim: int = 32
    batch_size: int = 512
    # An upper bound: early stopping on the validation holdout picks the epoch (on the
    # Criteo-shaped log one epoch gave AUC 0.696, the picked fourth 0.707).
    epochs: int = 10
    max_steps: int = 0                # 0 = run the epochs; > 0 caps the steps
    wide_learning_rate: float = 0.05  # FTRL
    wide_l1: float = 0.001
    # FTRL's penalties weigh against the *sum* of the steps' batch-mean gradients, so L2 =
    # 0.1 at batch 512 is a logistic regression's 1 / (2 C) with C about 0.01 per pass. The
    # old 0.0001 was no penalty at all: the wide part overfitted rare ids from epoch 2 and
    # lost to a plain logistic regression. Validation log loss picked 0.1 on the
    # Criteo-shaped log and MovieLens (of 1e-4..1), 1 on Adult: `widedeep tune` searches it.
    wide_l2: float = 0.1
    deep_learning_rate: float = 0.05  # AdaGrad
    # The deep learning rate rises linearly over the first steps: AdaGrad's first step is
    # about the full rate on every weight of the tower at once (its accumulators start
    # near zero), which threw the logits to ±100s (log loss 180 at step 2) before.
    deep_warmup_steps: int = 100
    # L2 on the embeddings each example looks up (their squared norms; a multivalent
    # feature's mean), as a batch mean added to the log loss: a rarely seen user or movie
    # keeps a small embedding. Only looked-up rows, so the gradient stays sparse. 0 = off.
    # MovieLens picked 0.01 on validation log loss (0.5418 -> 0.5389 at dim 32; of 1e-4..3e-2).
    embedding_l2: float = 0.0
    # Deep towers trained side by side with one wide part (an ensemble inside the model):
    # tower k learns from its own logistic loss on wide + deep_k over its own shuffle of the
    # train data, so the towers do not co-adapt; the wide part from the mean of their
    # gradients; the model predicts from wide + the mean of the towers' logits. Training
    # reads the data N times and costs about N times as much. 1 = the paper's one tower.
    deep_towers: int = 1
    # Training stops once the validation log loss has not improved for this many epochs,
    # and keeps the best epoch's weights. 0 = train every epoch, keep the last.
    early_stopping_patience: int = 2
    checkpoint_every_steps: int = 200
    seed: int = 42

    def __post_init__(self):
        # The one model-type check: a config file gets it with the file and key at load.
        check, why = PARAM_RULES[TrainParams]["model_type"]
        if not check(self.model_type):
            raise ValueError(f"train.model_type {why}, got {self.model_type!r}")


TRAIN_ON = ("new_day", "window")


@dataclasses.dataclass(frozen=True)
class AnalysisParams:
    """Which days the analyzers (vocabularies, quantiles) see on a nightly run."""
    # The new day and the days before it: a token that skipped the new day keeps its
    # vocabulary row, and with it its warm-started embedding. Earlier days come from the
    # analyzer cache in the work dir, so a night counts only its new day.
    window_days: int = 1
    train_on: str = "new_day"  # or "window": train on every day of the window


@dataclasses.dataclass(frozen=True)
class ValidationParams:
    """What stops a night before training: bad rows, and data unlike the blessed run's."""
    max_dead_letter_fraction: float = 0.01
    # A schema file (relative to the config file); without one, the work dir's schema,
    # captured from the first blessed run, is used.
    schema: str = ""
    # Day-over-day drift against the last blessed run: TFDV's L-infinity distance of
    # categorical value shares, and the Jensen-Shannon divergence (base 2) of numeric
    # distributions; 0.3 is Vertex AI Model Monitoring's default for both.
    max_categorical_drift: float = 0.3
    max_numeric_drift: float = 0.3
    # Growth in the share of a column's values outside the blessed model's vocabulary.
    max_unseen_increase: float = 0.2
    # Today's rows against the median of the last `volume_history` runs: a tenth is a
    # broken export, a doubling a join that duplicated rows.
    min_volume_ratio: float = 0.3
    max_volume_ratio: float = 1.8
    volume_history: int = 7
    # Anomalies accepted as known changes: a name ("volume", "drift") or name:column.
    allow_anomalies: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class GateParams:
    min_auc: float = 0.6
    max_calibration_error: float = 0.1   # |mean prediction / positive rate - 1|
    max_auc_drop: float = 0.002          # candidate AUC >= baseline AUC - this
    max_logloss_increase: float = 0.002  # candidate log loss <= baseline + this


@dataclasses.dataclass(frozen=True)
class ServingParams:
    keep_versions: int = 3
    top_k: int = 10
    query_columns: tuple[str, ...] = ()
    item_column: str = ""


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    source: str
    input: InputSpec
    label: LabelSpec
    columns: tuple[ColumnSpec, ...]
    crosses: tuple[CrossSpec, ...]
    wide: tuple[str, ...]
    deep: tuple[str, ...]
    slices: tuple[str, ...]
    split: SplitSpec
    validation: ValidationParams
    train: TrainParams
    gate: GateParams
    serving: ServingParams
    analysis: AnalysisParams = AnalysisParams()
    digest: str = ""

    @property
    def max_dead_letter_fraction(self) -> float:
        return self.validation.max_dead_letter_fraction

    def column(self, name: str) -> ColumnSpec:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        """Data columns in file order (label included)."""
        return tuple(c.name for c in self.columns)

    @property
    def feature_columns(self) -> tuple[ColumnSpec, ...]:
        """Columns that become model features (categorical, multivalent, numeric)."""
        return tuple(c for c in self.columns if c.kind_info.feature)

    @property
    def raw_columns(self) -> tuple[ColumnSpec, ...]:
        """Columns kept after parsing: features, keys and the label."""
        return tuple(c for c in self.columns if c.kind != IGNORE)

    def model_feature_names(self) -> tuple[str, ...]:
        """Every transformed feature the model may read (wide or deep), in config order."""
        names = [c.name for c in self.feature_columns] + [x.name for x in self.crosses]
        used = set(self.wide) | set(self.deep)
        return tuple(n for n in names if n in used)


# ---------------------------------------------------------------------------------------
# Loading and validation


class _Table:
    """A TOML table that remembers its dotted path and refuses keys nobody read."""

    def __init__(self, source: str, path: str, data: Any):
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{path}] must be a table, got {type(data).__name__}")
        self.source, self.path, self.data = source, path, data
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{self.key(name)}': {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...,
            rule: tuple = (None, "")) -> Any:
        """The value of key `name`, of type `kind`; `rule` is (check, what it requires)."""
        self._read.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML ints are acceptable where floats are expected; bools are never numbers.
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.error(name, f"expected {_kind_name(kinds)}, got {value!r}")
        check, why = rule
        if check is not None and not check(value):
            raise self.error(name, f"{why} (got {value!r})")
        return value

    def strings(self, name: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(name, list, default)
        if value is None:
            return ()
        if not all(isinstance(v, str) for v in value):
            raise self.error(name, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def table(self, name: str, required: bool = False) -> "_Table":
        self._read.add(name)
        if name not in self.data:
            if required:
                raise self.error(name, "is required")
            return _Table(self.source, self.key(name), {})
        return _Table(self.source, self.key(name), self.data[name])

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read)) or "none"
            raise self.error(unknown[0], f"unknown key (known keys here: {known})")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _load_input(root: _Table) -> InputSpec:
    t = root.table("input")
    spec = _load_dataclass(t, InputSpec)
    if spec.format == "csv" and not spec.header and not spec.columns:
        raise t.error("columns", "is required when header = false (the CSV has no header to "
                                 "name its columns)")
    if spec.comment_prefix and spec.comment_prefix[0] == spec.delimiter:
        raise t.error("comment_prefix", f"{spec.comment_prefix!r} starts with the delimiter, "
                                        "so rows whose first field is empty would be dropped")
    return spec


def _load_column(t: _Table, name: str) -> ColumnSpec:
    kind = t.get("kind", str, rule=_one_of(COLUMN_KINDS))
    fields: dict[str, Any] = {"name": name, "kind": kind}
    if KINDS[kind].categorical:
        fields.update(_load_vocab_or_hash(t))
        if kind == MULTIVALENT:
            fields["separator"] = t.get("separator", str, "|",
                                        ((lambda v: len(v) >= 1), "must not be empty"))
    elif kind == NUMERIC:
        fields["quantile_buckets"] = t.get("quantile_buckets", int, 10, _at_least(2))
        fields["log"] = t.get("log", bool, False)
        clip = t.get("clip", list, None)
        if clip is not None:
            if (len(clip) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           for v in clip) or clip[0] >= clip[1]):
                raise t.error("clip", f"must be [low, high] with low < high, got {clip!r}")
            fields["clip"] = (float(clip[0]), float(clip[1]))
        fields["default"] = t.get("default", float, 0.0)
    if KINDS[kind].feature:
        fields["max_drift"] = t.get("max_drift", float, None, _SHARE)
    t.finish()
    return ColumnSpec(**fields)


def _load_vocab_or_hash(t: _Table) -> dict[str, int]:
    hash_buckets = t.get("hash_buckets", int, 0, _at_least(0))
    if hash_buckets and ("vocab_min_count" in t.data or "oov_buckets" in t.data):
        raise t.error("hash_buckets", "use either hash_buckets or a vocabulary "
                                      "(vocab_min_count / oov_buckets), not both")
    return {
        "hash_buckets": hash_buckets,
        "vocab_min_count": t.get("vocab_min_count", int, 1, _at_least(1)),
        # At least one OOV bucket: serving meets tokens the vocabulary never saw.
        "oov_buckets": t.get("oov_buckets", int, 1, _at_least(1)),
    }


def load_config(path: str | Path) -> FeatureConfig:
    """Reads and validates a feature config file."""
    path = Path(path)
    source = str(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the config: {e.strerror}") from None
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    config = parse_config(data, source)
    return dataclasses.replace(config, digest=hashlib.sha256(raw_bytes).hexdigest()[:16])


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> FeatureConfig:
    """One loader per table, in the order later tables refer to earlier ones."""
    root = _Table(source, "", dict(data))
    input_spec = _load_input(root)
    label = _load_label(root.table("label", required=True))
    columns = _load_columns(root.table("columns", required=True), label, input_spec)
    by_name = {c.name: c for c in columns}
    crosses = _load_crosses(root, by_name)
    wide, deep = _load_model(root.table("model", required=True), columns, crosses)
    slices = _load_slices(root.table("eval"), by_name)
    split = _load_split(root.table("split"), by_name)
    validation = _load_dataclass(root.table("validation"), ValidationParams)
    train = _load_dataclass(root.table("train"), TrainParams)
    gate = _load_dataclass(root.table("gate"), GateParams)
    serving = _load_dataclass(root.table("serving"), ServingParams)
    analysis = _load_dataclass(root.table("analysis"), AnalysisParams)
    for key, names_ in (("query_columns", serving.query_columns),
                        ("item_column", (serving.item_column,) if serving.item_column else ())):
        for n in names_:
            if n not in by_name:
                raise ConfigError(f"{source}: key 'serving.{key}': '{n}' is not a column")
    root.finish()
    return FeatureConfig(source=source, input=input_spec, label=label, columns=columns,
                         crosses=crosses, wide=wide, deep=deep, slices=slices,
                         split=split, validation=validation, train=train,
                         gate=gate, serving=serving, analysis=analysis)


def _load_label(label_t: _Table) -> LabelSpec:
    label = LabelSpec(column=label_t.get("column", str), positive=label_t.strings("positive"),
                      negative=label_t.strings("negative"))
    if not label.positive or not label.negative:
        raise label_t.error("positive" if not label.positive else "negative",
                            "must list at least one value")
    both = set(label.positive) & set(label.negative)
    if both:
        raise label_t.error("negative", f"value {sorted(both)[0]!r} is also positive")
    label_t.finish()
    return label


def _load_columns(columns_table: _Table, label: LabelSpec,
                  input_spec: InputSpec) -> tuple[ColumnSpec, ...]:
    """The columns in file order (input.columns) when it is given, else config order."""
    source = columns_table.source
    if not columns_table.data:
        raise columns_table.error("", "no columns defined")
    if label.column in columns_table.data:
        raise columns_table.error(label.column, "is the label column; describe it in [label] "
                                                "only")
    columns = tuple(_load_column(columns_table.table(name), name)
                    for name in list(columns_table.data))
    columns += (ColumnSpec(name=label.column, kind=LABEL),)
    columns_table.finish()
    by_name = {c.name: c for c in columns}
    if not input_spec.columns:
        return columns
    extra = [c for c in input_spec.columns if c not in by_name]
    if extra:
        raise ConfigError(f"{source}: key 'input.columns': column '{extra[0]}' has no "
                          f"[columns.{extra[0]}] table (mark it kind = \"ignore\" to drop it)")
    missing = [c for c in by_name if c not in input_spec.columns]
    if missing:
        raise ConfigError(f"{source}: key 'input.columns': column '{missing[0]}' is "
                          f"configured but not listed here")
    return tuple(by_name[c] for c in input_spec.columns)


def _load_crosses(root: _Table, by_name: dict[str, ColumnSpec]) -> tuple[CrossSpec, ...]:
    crosses = []
    for i, item in enumerate(root.get("crosses", list, [])):
        t = _Table(root.source, f"crosses[{i}]", item)
        cross_columns = t.strings("columns")
        if len(cross_columns) < 2:
            raise t.error("columns", "a cross needs at least two columns")
        for c in cross_columns:
            if c not in by_name:
                raise t.error("columns", f"unknown column '{c}'; columns are {', '.join(by_name)}")
            if not (by_name[c].is_categorical or by_name[c].kind == NUMERIC):
                raise t.error("columns", f"column '{c}' is {by_name[c].kind}; crosses take "
                                         "categorical, multivalent or numeric columns (a "
                                         "numeric one by its quantile bucket)")
        name = t.get("name", str, "_x_".join(cross_columns))
        crosses.append(CrossSpec(name=name, columns=cross_columns, **_load_vocab_or_hash(t)))
        t.finish()
    names = list(by_name) + [x.name for x in crosses]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{root.source}: key 'crosses': name '{sorted(dup)[0]}' is used twice")
    return tuple(crosses)


def _load_model(model_t: _Table, columns, crosses) -> tuple[tuple[str, ...], tuple[str, ...]]:
    features = {c.name for c in columns if c.kind_info.feature}
    features |= {x.name for x in crosses}
    wide, deep = model_t.strings("wide"), model_t.strings("deep")
    for key, names_ in (("wide", wide), ("deep", deep)):
        for n in names_:
            if n not in features:
                raise model_t.error(key, f"unknown feature '{n}'; features are "
                                         f"{', '.join(sorted(features))}")
    if not wide or not deep:
        raise model_t.error("wide" if not wide else "deep", "must name at least one feature")
    model_t.finish()
    return wide, deep


def _load_slices(eval_t: _Table, by_name: dict[str, ColumnSpec]) -> tuple[str, ...]:
    slices = eval_t.strings("slices", ())
    for s in slices:
        # Slices are read back from the raw eval examples as strings.
        if s not in by_name or not by_name[s].kind_info.row_key:
            kind = f"a {by_name[s].kind} column" if s in by_name else "not a column"
            raise eval_t.error("slices", f"'{s}' is {kind}; slices take categorical or key "
                                         "columns")
    eval_t.finish()
    return slices


def _load_split(split_t: _Table, by_name: dict[str, ColumnSpec]) -> SplitSpec:
    split = _load_dataclass(split_t, SplitSpec)
    # The hash split, and the validation holdout under either method, hash the key's bytes:
    # one string per row.
    if split.method == "hash" or split.key:
        if split.key not in by_name:
            raise split_t.error("key", f"'{split.key}' is not a column (split.method = \"hash\" "
                                       "needs a key column)" if split.method == "hash" else
                                f"'{split.key}' is not a column")
        if not by_name[split.key].kind_info.row_key:
            raise split_t.error("key", f"'{split.key}' is a {by_name[split.key].kind} column; "
                                       "the split key must be a categorical or key column")
    if split.method == "day":
        if split.day_column not in by_name:
            raise split_t.error("day_column", f"'{split.day_column}' is not a column")
        if by_name[split.day_column].kind in (IGNORE, MULTIVALENT, LABEL):
            raise split_t.error("day_column", f"'{split.day_column}' is a "
                                              f"{by_name[split.day_column].kind} column; the day "
                                              "column must hold one value per row")
    return split


def _at_least(low):
    return (lambda v: v >= low), f"must be >= {low}"


def _above(low):
    return (lambda v: v > low), f"must be > {low}"


def _one_of(values):
    return (lambda v: v in values), f"must be one of {', '.join(values)}"


_SHARE = ((lambda v: 0 <= v <= 1), "must be between 0 and 1")


# Range rules for the params tables: a value outside them would fail (or silently do
# nothing useful) only after transform and training, so it is refused at load time.
PARAM_RULES: dict[type, dict[str, tuple]] = {
    InputSpec: {
        "format": _one_of(INPUT_FORMATS),
        "delimiter": ((lambda v: len(v) == 1),
                      "must be one character (use strip = true for \", \"-separated files)"),
        "skip_lines": _at_least(0), "max_field_chars": _at_least(1),
    },
    SplitSpec: {
        "method": _one_of(SPLIT_METHODS), "eval_days": _at_least(1),
        "eval_fraction": ((lambda v: 0 < v < 1), "must be between 0 and 1"),
        "validation_fraction": ((lambda v: 0 <= v <= 0.5), "must be between 0 and 0.5"),
    },
    TrainParams: {
        "model_type": _one_of(MODEL_TYPES),
        "embedding_dim": _at_least(1), "batch_size": _at_least(1), "epochs": _at_least(1),
        "max_steps": _at_least(0), "checkpoint_every_steps": _at_least(1),
        "hidden_units": ((lambda v: all(u >= 1 for u in v)), "every layer needs >= 1 unit"),
        "wide_learning_rate": _above(0), "deep_learning_rate": _above(0),
        "wide_l1": _at_least(0), "wide_l2": _at_least(0), "deep_warmup_steps": _at_least(0),
        "embedding_l2": _at_least(0), "deep_towers": _at_least(1),
        "early_stopping_patience": _at_least(0),
    },
    GateParams: {
        "min_auc": _SHARE,
        "max_calibration_error": _at_least(0),
    },
    ValidationParams: {
        **{name: _SHARE for name in (
            "max_dead_letter_fraction", "max_categorical_drift", "max_numeric_drift",
            "max_unseen_increase")},
        "min_volume_ratio": _at_least(0), "max_volume_ratio": _at_least(1),
        "volume_history": _at_least(1),
    },
    ServingParams: {"keep_versions": _at_least(1), "top_k": _at_least(1)},
    AnalysisParams: {"window_days": _at_least(1),
                     "train_on": _one_of(TRAIN_ON)},
}


def _load_dataclass(t: _Table, cls):
    """Fills a dataclass of defaults (a params table, [input], [split]) from a table, type-
    and range-checked."""
    values = {}
    rules = PARAM_RULES.get(cls, {})
    for field in dataclasses.fields(cls):
        default = field.default
        rule = rules.get(field.name, (None, ""))
        if default == ():  # a list of strings
            values[field.name] = t.strings(field.name, ())
        elif isinstance(default, tuple):  # of numbers (hidden_units)
            value = t.get(field.name, list, None)
            if value is not None:
                item_type = type(default[0])
                if not all(isinstance(v, item_type) and not isinstance(v, bool) for v in value):
                    raise t.error(field.name, f"expected a list of {item_type.__name__}, "
                                              f"got {value!r}")
                if rule[0] is not None and not rule[0](value):
                    raise t.error(field.name, f"{rule[1]} (got {value!r})")
                values[field.name] = tuple(value)
        else:
            values[field.name] = t.get(field.name, type(default), default, rule)
    t.finish()
    return dataclasses.replace(cls(), **values)


def with_overrides(params, overrides: Mapping[str, Any]):
    """Returns params with CLI overrides applied (None means 'not given')."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(params, **given)
