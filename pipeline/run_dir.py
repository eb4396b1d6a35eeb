"""The work dir's layout, spelled once: the orchestrator writes it, the report and the
history read it::

    <work_dir>/
      raw/day=*/*.csv        the built-in synthetic log (`widedeep run` without --input)
      serving/<version>/     published models (pipeline/serving.py)
      analysis_cache/<key>/  per-day vocabulary counts and quantile sketches ([analysis])
      schema.json            the data schema, captured from the first blessed run
      runs/<run_id>/         one run (RunDir):
        manifest.json        every stage's start, end, outcome and result; written last
        .reserve             disk kept free for the manifest's last word
        transform/           the transform output (stats.json written last)
        transform.partial/   a transform that failed its checks (stats.json says why)
        validation.json      the data checks: drift, unseen values, volume, anomalies
        model/               the training run (trainer.model.ModelDir)
        export/              the candidate SavedModel
        eval/                metrics.json, candidate_probabilities.npy, ablations.json,
                             gate.json, dry_run/
        model_wide/, model_deep/ (and *_export/)   the ablations (--ablations)
        report.html
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

from transforms import paths

LOG = logging.getLogger("widedeep")


@dataclasses.dataclass(frozen=True)
class RunDir:
    """``runs/<run_id>/``. Files are named relative to the run dir (the report quotes those
    names when one is missing); :meth:`path` makes them absolute."""
    root: str

    MANIFEST: ClassVar[str] = "manifest.json"
    RESERVE: ClassVar[str] = ".reserve"
    TRANSFORM_STATS: ClassVar[str] = "transform/stats.json"
    COLUMN_STATS: ClassVar[str] = "transform/column_stats.json"
    VALIDATION: ClassVar[str] = "validation.json"
    FAILED_TRANSFORM_STATS: ClassVar[str] = "transform.partial/stats.json"
    MODEL_DONE: ClassVar[str] = "model/DONE"
    MODEL_SUMMARY: ClassVar[str] = "model/summary.json"
    MODEL_HISTORY: ClassVar[str] = "model/history.json"
    MODEL_PROGRESS: ClassVar[str] = "model/progress.jsonl"
    METRICS: ClassVar[str] = "eval/metrics.json"
    PROBABILITIES: ClassVar[str] = "eval/candidate_probabilities.npy"
    ABLATIONS: ClassVar[str] = "eval/ablations.json"
    GATE: ClassVar[str] = "eval/gate.json"
    DRY_RUN: ClassVar[str] = "eval/dry_run"
    REPORT: ClassVar[str] = "report.html"

    def path(self, relative: str) -> str:
        return paths.join(self.root, relative)

    transform = paths.under("transform")
    model = paths.under("model")
    export = paths.under("export")
    eval = paths.under("eval")

    @property
    def run_id(self) -> str:
        return paths.basename(self.root)

    def ablation_model(self, model_type: str) -> str:
        return self.path(f"model_{model_type}")

    def manifest(self) -> dict | None:
        """The run's record ({} before its first save); None, with one line naming the file,
        if it cannot be read (a crash on a filesystem that lost the write): that run counts
        as failed and is redone."""
        path = self.path(self.MANIFEST)
        try:
            record = paths.read_json(path, default={})
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
            return record
        except (OSError, ValueError) as e:
            LOG.warning("manifest: %s is unreadable (%s: %s); counted as a failed run, redone "
                        "by the next call for it", path, type(e).__name__, str(e)[:200])
            return None


@dataclasses.dataclass(frozen=True)
class WorkDir:
    root: str
    raw = paths.under("raw")
    raw_input = paths.under("raw", "day=*", "*.csv", doc="The glob of the synthetic log's files.")
    serving = paths.under("serving")

    def analysis_cache(self, key: str) -> str:
        """TFT's analyzer cache of the nightly window, one dir per config (and code) key."""
        return paths.join(self.root, "analysis_cache", key)

    def run(self, run_id: str) -> RunDir:
        return RunDir(paths.join(self.root, "runs", run_id))

    def runs(self) -> list[RunDir]:
        """Every run dir with a manifest, oldest run id first."""
        return [RunDir(paths.dirname(p))
                for p in paths.glob(paths.join(self.root, "runs", "*", RunDir.MANIFEST))]

    def other_runs(self, current: str) -> list[RunDir]:
        """Every run but `current`, newest run id first."""
        return [run for run in reversed(self.runs()) if run.run_id != current]

    def run_models(self) -> list[str]:
        return paths.glob(paths.join(self.root, "runs", "*", "model"))
