"""widedeep: Wide & Deep (Cheng et al. 2016) as a batch pipeline on Beam, TFT and Keras.

Also the `--setup_file` for Dataflow: it only declares packages, so workers can install it
without touching the submitting machine's disk.
"""

import setuptools

setuptools.setup(
    name="widedeep",
    version="0.1.0",
    description="Wide & Deep recommender pipeline: TFT data generation, joint training "
                "with warm start, gated export to TF Serving.",
    python_requires=">=3.11,<3.12",
    packages=["pipeline", "transforms", "trainer", "configs"],
    package_data={"configs": ["*.toml"]},
    install_requires=[
        # Known to work together on Python 3.11: TFT 1.21 brings TF 2.21, Beam 2.77,
        # tfx-bsl 1.21 and pyarrow.
        "tensorflow-transform==1.21.*",
        "tensorflow==2.21.*",
        "apache-beam[gcp]==2.77.*",
        "tfx-bsl==1.21.*",
        # TFT needs Keras 2 (TF_USE_LEGACY_KERAS=1); tf_keras tracks the TF release.
        "tf_keras==2.21.*",
        # The PredictionLog protos of the warmup file (pipeline/warmup.py). Not 2.21: tfx-bsl
        # 1.21 requires >=2.19,<2.20 (pip finds no resolution with 2.21); 2.19 takes TF 2.21.
        "tensorflow-serving-api==2.19.*",
        "pyarrow",
        "numpy",
        "matplotlib",
        # `widedeep tune`: the TPE search over [train].
        "optuna==5.0.*",
    ],
    extras_require={
        # gcp-storage-emulator: a local GCS for the gs:// tests (tests/gcs.py).
        # scikit-learn and LightGBM: the quality benchmark's baselines (its smoke test too).
        "test": ["pytest", "gcp-storage-emulator==2026.7.19", "scikit-learn==1.9.*",
                 "lightgbm==4.7.*"],
        # torch is for the side-by-side training benchmark only, never a runtime dependency.
        "bench": ["torch==2.13.0", "scikit-learn==1.9.*", "lightgbm==4.7.*"],
    },
    entry_points={"console_scripts": ["widedeep=pipeline.cli:main"]},
)
