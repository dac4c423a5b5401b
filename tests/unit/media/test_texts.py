"""Text for Nova: decoded exactly or refused with a reason, and chunked within the inline limit at
the most natural break available."""

from __future__ import annotations

import codecs
import random

import pytest

from tasks.demo.sample_media import garbage
from tasks.media.images import PreparationError
from tasks.media.texts import decoded_text, text_chunks

FRENCH = (
    "Le cœur a ses raisons que la raison ne connaît point. Où est la bibliothèque ? "
    "À bientôt, garçon ! Les élèves étudient l'économie et la société française.\n"
)
GERMAN = "Grüße aus München! Die Straße ist schön, das Wetter außergewöhnlich gut.\n"
MIXED = "naïve café — “smart quotes”, 日本語, emoji 🙂 and math ∑√π\n"


def code_of(data: bytes, declared: str | None = None) -> str:
    with pytest.raises(PreparationError) as raised:
        decoded_text(data, declared)
    assert str(raised.value)
    return raised.value.code


@pytest.mark.parametrize(
    "data",
    [
        MIXED.encode("utf-8"),
        codecs.BOM_UTF8 + MIXED.encode("utf-8"),
        MIXED.encode("utf-16"),  # with its byte-order mark, in the machine's byte order
        codecs.BOM_UTF16_BE + MIXED.encode("utf-16-be"),
        MIXED.encode("utf-32"),
    ],
    ids=["utf-8", "utf-8 BOM", "utf-16 BOM", "utf-16-be BOM", "utf-32 BOM"],
)
def test_unicode_is_decoded_exactly_and_without_its_byte_order_mark(data: bytes) -> None:
    assert decoded_text(data) == MIXED


@pytest.mark.parametrize(
    ("text", "encoding"),
    [(FRENCH, "cp1252"), (GERMAN, "latin-1"), (FRENCH + "“quoted” – 50 €\n", "cp1252")],
)
def test_legacy_western_text_is_detected(text: str, encoding: str) -> None:
    assert decoded_text(text.encode(encoding)) == text


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Привет, мир! Это простой текст на русском языке для проверки.\n", "cp1251"),
        ("Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig.\n", "cp1250"),
    ],
)
def test_other_legacy_encodings_are_detected(text: str, encoding: str) -> None:
    assert decoded_text(text.encode(encoding)) == text


def test_a_declared_encoding_wins_over_detection() -> None:
    data = "Ðóññêèé".encode("cp1252")  # also valid cp1251, where it reads "Русский"

    assert decoded_text(data, "cp1252") == "Ðóññêèé"
    assert decoded_text(data, "cp1251") == "Русский"


def test_utf16_without_a_byte_order_mark_decodes_when_declared() -> None:
    assert decoded_text(MIXED.encode("utf-16-le"), "UTF-16LE") == MIXED
    assert code_of(MIXED.encode("utf-16-le")) == "text_binary"


def test_a_declared_utf8_file_loses_its_byte_order_mark() -> None:
    assert decoded_text(codecs.BOM_UTF8 + b"plain", "utf-8") == "plain"


def test_line_endings_are_kept_so_offsets_stay_true() -> None:
    assert decoded_text(b"one\r\ntwo\rthree\n") == "one\r\ntwo\rthree\n"


def test_an_unknown_declared_encoding_is_its_own_error() -> None:
    assert code_of(b"hello", "utf-9") == "text_bad_encoding"


def test_bytes_invalid_in_the_declared_encoding_are_never_replaced() -> None:
    assert code_of(FRENCH.encode("utf-8"), "ascii") == "text_undecodable"
    assert code_of(b"\xff\xfe\x00", "utf-8") == "text_binary"


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n ", codecs.BOM_UTF8, " \n".encode("utf-16")])
def test_empty_or_blank_text_is_empty(data: bytes) -> None:
    assert code_of(data) == "text_empty"


@pytest.mark.parametrize(
    "data",
    [
        b"text with a \x00 NUL byte",
        garbage(1),
        bytes(range(1, 9)) * 50 + b"a few words",
        b"\x1b\x01\x02\x03\x04" * 40,
    ],
)
def test_binary_content_is_binary(data: bytes) -> None:
    assert code_of(data) == "text_binary"


def test_random_bytes_without_nul_are_never_accepted_as_text() -> None:
    rng = random.Random(3)
    for _ in range(10):
        data = bytes(rng.randrange(1, 256) for _ in range(2000))
        assert code_of(data) in ("text_binary", "text_undecodable")


def test_ansi_coloured_logs_are_still_text() -> None:
    log = b"".join(b"\x1b[32mINFO\x1b[0m step %d finished in 0.5 s\n" % step for step in range(40))

    assert decoded_text(log).startswith("\x1b[32mINFO")


# Chunking -------------------------------------------------------------------------------------


def check_chunks(text: str, max_chars: int) -> list[tuple[int, int]]:
    """The chunking contract, for any text: returns the spans after checking every property."""
    spans = text_chunks(text, max_chars)
    position = 0
    for start, end in spans:
        assert 0 < end - start <= max_chars
        assert text[position:start].isspace() or start == position
        if start != position:
            # A gap is only ever whitespace that would have filled a whole chunk by itself.
            assert text[position : position + max_chars].isspace()
        assert text[start:end].strip(), "no chunk may be blank"
        position = end
    assert text[position:].strip() == "", "only whitespace may be left after the last chunk"
    if not text.strip():
        assert spans == []
    return spans


def test_short_text_is_one_chunk_with_all_its_characters() -> None:
    assert check_chunks("  hello world \n", 100) == [(0, 15)]


def test_empty_and_blank_text_have_no_chunks() -> None:
    assert check_chunks("", 10) == []
    assert check_chunks(" \n\n\t ", 10) == []


def test_paragraph_breaks_are_preferred() -> None:
    text = "First paragraph, one line.\nStill first.\n\nSecond paragraph here.\nMore of it."

    spans = check_chunks(text, 50)

    assert text[: spans[0][1]] == "First paragraph, one line.\nStill first.\n\n"


def test_a_line_break_is_used_when_no_paragraph_break_is_late_enough() -> None:
    text = "a\n\n" + "word " * 8 + "\n" + "next line words here"

    spans = check_chunks(text, 50)

    assert text[spans[0][0] : spans[0][1]].endswith("word \n")


def test_whitespace_is_used_when_there_are_no_line_breaks() -> None:
    text = " ".join(f"w{index:03d}" for index in range(100))

    spans = check_chunks(text, 42)

    assert all(text[end - 1] == " " for _, end in spans[:-1])
    assert all(len(text[start:end].split()) == 8 for start, end in spans[:-1])


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    spans = check_chunks("x" * 25, 10)

    assert spans == [(0, 10), (10, 20), (20, 25)]


def test_hard_cuts_keep_combining_marks_with_their_letter() -> None:
    text = "e\u0301" * 20  # é written as e + combining acute accent

    spans = check_chunks(text, 9)

    assert all(text[start] == "e" for start, _ in spans)


def test_a_whitespace_run_longer_than_a_chunk_is_skipped_not_sent() -> None:
    text = "alpha" + " " * 30 + "omega"

    spans = check_chunks(text, 10)

    assert [text[start:end].strip() for start, end in spans] == ["alpha", "omega"]


def test_trailing_whitespace_that_fits_stays_in_the_last_chunk() -> None:
    assert check_chunks("one two\n\n", 20) == [(0, 9)]


def test_chunks_fit_novas_inline_limit() -> None:
    text = ("A sentence of some length, with words. " * 30 + "\n\n") * 40

    spans = check_chunks(text, 8000)

    assert len(spans) == 7  # six 1,172-character paragraphs fit in 8,000
    assert all(text[start:end].endswith("\n\n") for start, end in spans[:-1])


def random_text(rng: random.Random) -> str:
    pieces = []
    for _ in range(rng.randrange(0, 120)):
        roll = rng.random()
        if roll < 0.55:
            pieces.append("".join(rng.choice("abcdéø日🙂") for _ in range(rng.randrange(1, 12))))
        elif roll < 0.75:
            pieces.append(" ")
        elif roll < 0.85:
            pieces.append("\n")
        elif roll < 0.92:
            pieces.append("\n\n")
        elif roll < 0.96:
            pieces.append(rng.choice(["\r\n\r\n", "\t", " \n \n "]))
        elif roll < 0.98:
            pieces.append(" " * rng.randrange(10, 60))
        else:
            pieces.append("z" * rng.randrange(20, 80))
    return "".join(pieces)


def test_chunking_properties_hold_for_random_texts() -> None:
    rng = random.Random(20240601)
    for _ in range(500):
        text = random_text(rng)
        max_chars = rng.choice([1, 2, 5, 16, 40, 100])
        spans = check_chunks(text, max_chars)
        for start, end in spans[:-1]:
            window = text[start : start + max_chars]
            content_start = len(window) - len(window.lstrip())
            chunk = text[start:end]
            if not chunk[-1].isspace():
                # Cut mid-word: allowed only when the window had no break after its content.
                assert not any(char.isspace() for char in window.strip()), (text, spans)
            if "\n\n" in window[max(max_chars // 2, content_start + 1) :]:
                # A paragraph break in the second half of the window wins over anything else.
                assert chunk[len(chunk.rstrip()) :].count("\n") >= 2, (text, spans)


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        text_chunks("text", 0)
