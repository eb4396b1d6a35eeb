"""The project's vocabulary analyzer writes the files TFT's own tft.vocabulary writes."""

import tempfile

import pytest
import tensorflow as tf

from transforms import vocabulary

# Ties at every count, a token that is a prefix of another, bytes that sort differently
# from text, an empty token, tokens with a line break, multi-byte UTF-8.
TOKENS = [b"b", b"a", b"ab", b"a", b"b", b"", b"x\ny", b"c\r", b"\xc3\xa9t\xc3\xa9", b"Z",
          b"\xc3\xa9t\xc3\xa9", b"zz", b"ab", b"b", b"q", b"a"]


def _analyze(min_count: int, rows: list[dict], cacheable: bool) -> dict[str, bytes]:
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    spec = {"single": tf.io.FixedLenFeature([], tf.string),
            "multi": tf.io.VarLenFeature(tf.string)}

    def preprocessing_fn(inputs):
        threshold = min_count if min_count > 1 else None
        for name in ("single", "multi"):
            tft.vocabulary(inputs[name], vocab_filename=f"tft_{name}",
                           frequency_threshold=threshold)
        vocabulary.analyze({"ours_single": inputs["single"], "ours_multi": inputs["multi"]},
                           {"ours_single": min_count, "ours_multi": min_count}, cacheable)
        return {"single": inputs["single"]}

    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    out = tempfile.mkdtemp()
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    output = tft.TFTransformOutput(out)
    files = {}
    for name in ("tft_single", "tft_multi", "ours_single", "ours_multi"):
        with tf.io.gfile.GFile(output.vocabulary_file_by_name(name), "rb") as f:
            files[name] = f.read()
    return files


@pytest.mark.parametrize("min_count", [1, 2, 4])
@pytest.mark.parametrize("cacheable", [False, True], ids=["one_pass", "cacheable"])
def test_files_are_byte_identical_to_tfts(min_count, cacheable):
    rows = [{"single": t, "multi": TOKENS[i % 5:i % 5 + i % 4]} for i, t in enumerate(TOKENS)]

    files = _analyze(min_count, rows, cacheable)

    assert files["ours_single"] == files["tft_single"]
    assert files["ours_multi"] == files["tft_multi"]
    if min_count == 4:  # nothing is that frequent: TFT's placeholder line, not an empty file
        assert files["ours_single"] == vocabulary.EMPTY_VOCABULARY_TOKEN + b"\n"


def test_counts_merge_across_batches_as_one_count():
    first = vocabulary.count_tokens((TOKENS[:7],))
    second = vocabulary.count_tokens((TOKENS[7:],))
    whole = vocabulary.count_tokens((TOKENS,))

    merged = vocabulary.merge_counts([first, second])

    assert (vocabulary.vocabulary_file_bytes(merged, 2)
            == vocabulary.vocabulary_file_bytes(whole, 2) == b"b\na\n\xc3\xa9t\xc3\xa9\nab\n")
    coder = vocabulary._CountsCoder()
    assert coder.decode_cache(coder.encode_cache(merged)).equals(merged)
