import numpy as np
import pytest

from textgen.corpus.reading import read_chunks, read_text
from textgen.corpus.stream_batches import (
    StreamBatches,
    minimum_corpus_length,
    split_train_validation,
)
from textgen.errors import UsageError


def test_each_row_continues_the_same_row_of_the_previous_batch():
    ids = np.arange(1000, dtype=np.int32)  # every id is its own position in the text
    batches = StreamBatches(ids, batch_size=7, seq_length=9)
    assert len(batches) == 999 // 63
    previous = None
    for k in range(len(batches)):
        inputs, targets = batches[k]
        assert inputs.shape == targets.shape == (7, 9)
        np.testing.assert_array_equal(targets, inputs + 1)  # targets are inputs shifted by one
        for r in range(7):
            np.testing.assert_array_equal(np.diff(inputs[r]), 1)  # a contiguous piece of text
            if previous is not None:
                assert inputs[r, 0] == previous[r, -1] + 1  # continues row r of batch k-1
        previous = inputs
    # Streams are contiguous, disjoint and in text order.
    starts = [batches[0][0][r, 0] for r in range(7)]
    assert starts == sorted(starts) and len(set(starts)) == 7


def test_too_short_for_one_batch():
    with pytest.raises(UsageError, match="need at least 51"):
        StreamBatches(np.arange(50), batch_size=5, seq_length=10)


def test_validation_is_the_contiguous_tail():
    train, val = split_train_validation(np.arange(100), 0.1)
    assert list(val) == list(range(90, 100)) and list(train) == list(range(90))


def test_minimum_length_is_enough():
    n = minimum_corpus_length(8, 20, 0.1)
    train, val = split_train_validation(np.arange(n), 0.1)
    StreamBatches(train, 8, 20)
    StreamBatches(val, 1, 20)
    train, val = split_train_validation(np.arange(n - 1), 0.1)
    with pytest.raises(UsageError):
        StreamBatches(train, 8, 20)
        StreamBatches(val, 1, 20)


def test_read_text_reports_line_and_byte_offset_of_bad_bytes(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("hello\nwörld\n".encode("latin-1"))
    with pytest.raises(UsageError) as error:
        read_text(path, "utf-8")
    message = str(error.value)
    assert "line 2" in message and "byte offset 7" in message and "`encoding`" in message
    assert read_text(path, "latin-1") == "hello\nwörld\n"


def test_read_text_drops_bom_and_normalises_newlines(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes("\ufeffa\r\nb\r\n".encode("utf-8"))
    assert read_text(path) == "a\nb\n"
    assert read_text(path, keep_newlines=True) == "a\r\nb\r\n"


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "is empty"),
    ],
)
def test_read_text_errors(tmp_path, setup, match):
    path = tmp_path / "corpus"
    setup(path)
    with pytest.raises(UsageError, match=match):
        read_text(path)


def test_unknown_encoding(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("abc")
    with pytest.raises(UsageError, match="unknown encoding"):
        read_text(path, "no-such-codec")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 1 << 20])
def test_chunked_reading_is_the_whole_text(tmp_path, chunk_bytes):
    """Chunk boundaries inside a multi-byte character, between \\r and \\n, after the BOM."""
    text = "\ufeffé中\r\n🙂\r\nab\r" * 5 + "\r\n"
    for encoding in ("utf-8", "utf-16", "gb18030"):
        path = tmp_path / f"t.{encoding}"
        path.write_bytes(text.encode(encoding))
        chunks = list(read_chunks(path, encoding, chunk_bytes=chunk_bytes))
        assert "".join(chunks) == text[1:].replace("\r\n", "\n"), encoding
        kept = "".join(read_chunks(path, encoding, keep_newlines=True, chunk_bytes=chunk_bytes))
        assert kept == text[1:]


@pytest.mark.parametrize("chunk_bytes", [1, 4, 7, 1 << 20])
def test_a_bad_byte_in_any_chunk_keeps_line_column_and_offset(tmp_path, chunk_bytes):
    path = tmp_path / "bad.txt"
    path.write_bytes("ab\nçé\nxyz".encode() + b"\xe4\xb8" + b"\n")  # a cut 3-byte character
    with pytest.raises(UsageError) as error:
        "".join(read_chunks(path, chunk_bytes=chunk_bytes))
    assert "line 3, column 4, byte offset 11: bytes e4 b8 are not valid utf-8" in str(error.value)
