"""Setting the Keras mode is this package's import side effect, in this one place: every
entry point (the CLI, trainer/, pipeline/, bench/common.py, the tests) imports it before
TensorFlow, and subprocesses inherit the variable."""
import os

# TFT 1.21 needs Keras 2 (tf_keras); this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
