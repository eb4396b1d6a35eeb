"""NaN or ±inf in a numeric feature of a serving request: training never saw such values
(the reader dead-letters them), so serving scores them as a missing value, the column's
default (both signatures share the code; serving_default is checked), instead of the
top quantile bucket."""

import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import export


def with_value(serialized, column, value):
    example = tf.train.Example.FromString(serialized)
    if value is None:
        del example.features.feature[column]
    else:
        example.features.feature[column].float_list.value[:] = [value]
    return example.SerializeToString()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_score_as_the_columns_default(two_blessed_versions,
                                                         transform_output, value):
    work_dir, raw_eval = two_blessed_versions
    config = transform_output.config
    predict = export.load_predict_fn(os.path.join(work_dir, "export1"))
    examples = raw_eval.serialized[:50]
    for column in (c.name for c in config.feature_columns if c.kind == "numeric"):
        missing = predict([with_value(e, column, None) for e in examples])
        odd = predict([with_value(e, column, value) for e in examples])
        assert np.all(np.isfinite(odd))
        np.testing.assert_allclose(odd, missing, atol=1e-7, err_msg=column)
        # The default is a value like any other: an example holding it scores the same.
        default = config.column(column).default
        np.testing.assert_allclose(predict([with_value(e, column, default) for e in examples]),
                                   missing, atol=1e-7, err_msg=column)
