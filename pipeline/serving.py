"""The serving directory and what guards it: versions, publish, dry run.

``<serving_root>/<version>/`` holds TF Serving's layout: integer versions, the newest
serves. A version gets there only through :func:`publish`, which copies an export beside
serving under a name TF Serving ignores, adds TF Serving's warmup file to that copy
(:mod:`pipeline.warmup`), dry-runs it in a fresh Python process (:func:`dry_run`, as serving
will load it, warmup replay included), and only then puts it in place.

TensorFlow and :mod:`trainer.export` are imported where used: `widedeep history` and the
orchestrator list versions without paying for TensorFlow's import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys

import numpy as np

from transforms import paths

LOG = logging.getLogger("widedeep")

PARTIAL_PREFIX = ".partial-"
SAVED_MODEL_FILE = "saved_model.pb"  # what TF Serving needs to load a version: copied last


def serving_versions(serving_root: str) -> list[int]:
    """Complete published versions, oldest first: a canonical integer name (TF Serving
    ignores other names, and reads ``007`` as 7) holding ``saved_model.pb``. Anything else
    (an empty ``3/``, a copy cut short on GCS) is not a version; see :func:`serving_junk`."""
    return sorted(int(name) for name in paths.listdir(serving_root)
                  if _canonical_version(name)
                  and paths.exists(paths.join(serving_root, name, SAVED_MODEL_FILE)))


def _canonical_version(name: str) -> bool:
    return name.isdigit() and name == str(int(name))


def serving_junk(serving_root: str) -> list[str]:
    """Integer-looking entries that are not complete versions: left alone (a person's), but
    version numbers go past them so TF Serving never mistakes one for a new model."""
    complete = set(serving_versions(serving_root))
    return [name for name in paths.listdir(serving_root)
            if name.isdigit() and not (_canonical_version(name) and int(name) in complete)]


def export_identity(export_dir: str) -> str:
    """What makes two exports the same model: graph, variable checksums (the index holds a
    CRC of every tensor) and widedeep's metadata (its run id, source model dir). Not the
    warmup file, which publish adds: a published version is the same model as its export."""
    from trainer.export import EXTRA_DIR, METADATA_FILE

    digest = hashlib.sha256()
    for name in (SAVED_MODEL_FILE, "variables/variables.index",
                 f"{EXTRA_DIR}/{METADATA_FILE}"):
        path = paths.join(export_dir, name)
        digest.update(name.encode() + b"\0")
        digest.update(paths.read_bytes(path) if paths.exists(path) else b"-")
    return digest.hexdigest()


def already_published(export_dir: str, serving_root: str) -> int:
    """The version that already serves this export, or 0: a run killed after its publish
    but before its record said so must not publish the same model again on rerun."""
    identity = export_identity(export_dir)
    for version in reversed(serving_versions(serving_root)):
        if export_identity(paths.join(serving_root, str(version))) == identity:
            return version
    return 0


def publish(export_dir: str, serving_root: str, *, keep_versions: int, dry_run_examples,
            expected: np.ndarray | None, scratch_dir: str, before_rename=None) -> tuple[int, str]:
    """Copies an export into serving as the next version, only if its dry run passes.

    The copy goes to a partial directory whose name TF Serving ignores (not an integer), is
    dry-run there (so what was checked is byte for byte what serves), and is then put in
    place: locally in one atomic rename; on GCS by a copy with ``saved_model.pb`` as the
    last object, so a TF Serving poll during the copy finds no loadable model yet, never
    half of one. The copy gets TF Serving's warmup file, built from `dry_run_examples`
    (real eval examples), before its dry run. Publishing an export that already serves
    returns its version. Returns (version, reason); version 0 means the dry run failed and
    serving is untouched.
    """
    from pipeline import warmup

    paths.makedirs(serving_root)
    for name in paths.listdir(serving_root):  # leftovers of a run killed mid-copy
        if name.startswith(PARTIAL_PREFIX):
            # On GCS the kill may have come during the copy to <N>/: ours, and incomplete.
            copy = paths.join(serving_root, name[len(PARTIAL_PREFIX):])
            if not paths.exists(paths.join(copy, SAVED_MODEL_FILE)):
                paths.rmtree(copy)
            paths.rmtree(paths.join(serving_root, name))
    version = already_published(export_dir, serving_root)
    if version:
        return version, (f"already serving as version {version} (published before its run's "
                         "record was saved); not copied again")
    junk = serving_junk(serving_root)
    if junk:
        LOG.warning("publish: %s in %s %s not a complete version (no %s, or not a plain "
                    "integer name); left alone, and version numbers go past %s",
                    ", ".join(junk), serving_root, "is" if len(junk) == 1 else "are",
                    SAVED_MODEL_FILE, "it" if len(junk) == 1 else "them")
    version = max([int(name) for name in junk] + serving_versions(serving_root) + [0]) + 1
    partial = paths.join(serving_root, f"{PARTIAL_PREFIX}{version}")
    if not dry_run_examples:
        return 0, "no raw eval examples to dry-run the export and build its warmup file from"
    paths.copytree(export_dir, partial)
    warmup_file, warmup_records = warmup.write_warmup_requests(partial, dry_run_examples)
    LOG.info("publish: %d warmup requests (batches of %s real eval examples) → %s",
             warmup_records, "/".join(map(str, warmup.WARMUP_BATCH_SIZES)), warmup_file)
    passed, reason = dry_run(partial, dry_run_examples, expected, scratch_dir,
                             warmup_required=True)
    if not passed:
        paths.rmtree(partial)
        return 0, reason
    if before_rename is not None:
        before_rename(partial)
    paths.promote(partial, paths.join(serving_root, str(version)), marker=SAVED_MODEL_FILE)
    for old in serving_versions(serving_root)[:-keep_versions]:
        paths.rmtree(paths.join(serving_root, str(old)))
    return version, reason


# ---------------------------------------------------------------------------------------
# Dry run: the export loaded in a fresh Python process, as serving will load it.

DRY_RUN_TOLERANCE = 1e-5
WARMUP_REQUIRED = "warmup-required"  # the dry-run process's flag: publish's copies must have one


def dry_run(export_dir: str, serialized: list[bytes], expected: np.ndarray | None,
            work_dir: str, timeout: float = 600, warmup_required: bool = False) -> tuple[bool, str]:
    """(passed, reason). In a new process, replays the export's warmup file (if it has one;
    a missing one fails when `warmup_required`, as publish asks) and sends the examples
    through serving_default."""
    import tensorflow as tf

    paths.makedirs(work_dir)
    examples_path = paths.join(work_dir, "dry_run_examples.tfrecord")
    with tf.io.TFRecordWriter(examples_path) as writer:
        for record in serialized:
            writer.write(record)
    expected_path = ""
    if expected is not None:
        expected_path = paths.join(work_dir, "dry_run_expected.npy")
        paths.write_npy(expected_path, np.asarray(expected, dtype=np.float32))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")  # the Keras mode: see transforms/__init__
    try:
        done = subprocess.run([sys.executable, "-m", "pipeline.serving", export_dir, examples_path,
                               expected_path, WARMUP_REQUIRED if warmup_required else ""],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return False, f"dry run did not finish within {timeout:.0f}s"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 and not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"dry run process failed (exit {done.returncode}): {tail}"
    verdict = json.loads(lines[-1])
    return verdict["passed"], verdict["reason"]


def _check_export(export_dir: str, examples_path: str, expected_path: str,
                  warmup_required: bool) -> tuple[bool, str]:
    import tensorflow as tf

    from trainer.export import load_predict_fn, predict_in_batches

    try:
        predict = load_predict_fn(export_dir)
    except Exception as e:  # a model that does not load is the finding, not a crash
        return False, f"the export does not load: {type(e).__name__}: {str(e)[:300]}"
    warmup_passed, warmup_reason = _replay_warmup(predict.loaded, export_dir, warmup_required)
    if not warmup_passed:
        return False, warmup_reason
    serialized = list(tf.data.TFRecordDataset(examples_path).as_numpy_iterator())
    try:
        probabilities = predict_in_batches(predict, serialized)
    except Exception as e:
        return False, f"serving_default failed on raw examples: {type(e).__name__}: {str(e)[:300]}"
    if probabilities.shape != (len(serialized),):
        return False, f"expected {len(serialized)} probabilities, got shape {probabilities.shape}"
    if not np.all(np.isfinite(probabilities)):
        return False, f"{int((~np.isfinite(probabilities)).sum())} of {len(serialized)} outputs are not finite"
    if probabilities.min() < 0 or probabilities.max() > 1:
        return False, f"outputs outside [0, 1]: [{probabilities.min()}, {probabilities.max()}]"
    if expected_path:
        expected = paths.read_npy(expected_path)
        worst = float(np.max(np.abs(expected - probabilities))) if len(expected) else 0.0
        if worst > DRY_RUN_TOLERANCE:
            return False, (f"outputs differ from in-process predictions by up to {worst:.2e} "
                           f"(tolerance {DRY_RUN_TOLERANCE:.0e})")
    return True, (f"{len(serialized)} raw examples scored in a fresh process, all finite in "
                  f"[0, 1]{warmup_reason}")


def _replay_warmup(loaded, export_dir: str, required: bool) -> tuple[bool, str]:
    """What TF Serving does with the warmup file at load: a record it cannot run fails the
    load there, so it fails the dry run here. (passed, reason or a suffix for the verdict)"""
    from pipeline import warmup

    path = warmup.warmup_path(export_dir)
    if not paths.exists(path):
        if required:
            return False, f"{path}: missing (publish writes it before the dry run)"
        return True, ""
    try:
        records, examples = warmup.replay_warmup_requests(loaded, path)
    except warmup.WarmupError as e:
        return False, f"warmup file: {e}"
    return True, f"; {records} warmup requests ({examples} examples) replayed"


if __name__ == "__main__":
    passed, reason = _check_export(sys.argv[1], sys.argv[2], sys.argv[3],
                                   sys.argv[4] == WARMUP_REQUIRED)
    print(json.dumps({"passed": passed, "reason": reason}))
    sys.exit(0 if passed else 1)
