import transforms  # noqa: F401  (sets the Keras mode before TensorFlow loads: transforms/__init__.py)
