"""Reading qrels: every row problem is reported with its row and query, and the rest still loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from tasks.evaluate.qrels import (
    TEXT_QUERY_MAX_CHARS,
    LabeledQueries,
    LabeledQuery,
    QrelsError,
    parse_qrels,
    read_qrels,
)

MODALITIES = {
    "text/bread": "text",
    "text/rye": "text",
    "pdf/manual": "pdf",
    "images/cat": "image",
    "images/dog": "image",
    "audio/bird": "audio",
    "video/talk": "video",
}
KEYS = {
    "text/bread#chunk=0",
    "text/bread#chunk=1",
    "text/rye#chunk=0",
    "pdf/manual#page=1",
    "pdf/manual#page=2",
    "images/cat",
    "images/dog",
    "audio/bird#t=0.0-12.0",
    "video/talk#t=15.0-30.0",
}


def known(entry: str) -> bool:
    return entry in MODALITIES or entry in KEYS


def modality_of(entry: str) -> str | None:
    return MODALITIES.get(entry.split("#", 1)[0])


EXISTING_FILES = {"/corpus/q/cat.png", "/corpus/q/song.mp3", "/corpus/q/clip.mp4", "/abs/dog.jpg"}


def parse(*rows: Any, base_dir: str = "/corpus/q") -> LabeledQueries:
    text = "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows)
    return parse_qrels(
        text,
        known=known,
        modality_of=modality_of,
        base_dir=base_dir,
        file_exists=EXISTING_FILES.__contains__,
    )


def only_error(loaded: LabeledQueries) -> QrelsError:
    assert loaded.queries == ()
    assert len(loaded.errors) == 1, loaded.errors
    return loaded.errors[0]


def test_a_text_query_with_a_list_loads_with_grade_one_at_the_item_level() -> None:
    loaded = parse({"query_id": "q1", "text": "sourdough", "relevant": ["text/bread", "text/rye"]})

    assert loaded.ok
    assert loaded.warnings == ()
    assert loaded.queries == (
        LabeledQuery(
            query_id="q1",
            query_type="text→text",
            judgements=(("text/bread", 1), ("text/rye", 1)),
            row=1,
            text="sourdough",
        ),
    )
    query = loaded.queries[0]
    assert query.level == "item"
    assert query.modality == "text"
    assert query.relevant == frozenset({"text/bread", "text/rye"})


def test_graded_judgements_keep_their_grades_and_a_unit_key_makes_the_query_unit_level() -> None:
    loaded = parse(
        {"query_id": "q1", "text": "wiring", "relevant": {"pdf/manual#page=2": 2, "images/cat": 0}}
    )

    query = loaded.queries[0]
    assert query.grades == {"pdf/manual#page=2": 2, "images/cat": 0}
    assert query.relevant == frozenset({"pdf/manual#page=2"})
    assert query.level == "unit"
    # The bare image id is a whole-item unit key, so it may sit beside unit keys.
    assert loaded.ok


@pytest.mark.parametrize(
    ("file", "resolved", "query_type"),
    [
        ("cat.png", "/corpus/q/cat.png", "image→image"),
        ("../q/song.mp3", "/corpus/q/song.mp3", "audio→image"),
        ("clip.MP4", None, None),
        ("/abs/dog.jpg", "/abs/dog.jpg", "image→image"),
    ],
)
def test_a_file_query_resolves_against_the_base_and_takes_its_modality_from_the_suffix(
    file: str, resolved: str | None, query_type: str | None
) -> None:
    loaded = parse({"query_id": "q", "file": file, "relevant": ["images/cat"]})

    if resolved is None:  # clip.MP4 is a video by suffix, but no such file exists
        assert only_error(loaded).message == "query file not found: /corpus/q/clip.MP4"
        return
    assert loaded.queries[0].file == resolved
    assert loaded.queries[0].query_type == query_type


def test_a_video_query_file_is_a_video_query() -> None:
    loaded = parse({"query_id": "q", "file": "clip.mp4", "relevant": ["video/talk#t=15.0-30.0"]})

    assert loaded.queries[0].modality == "video"
    assert loaded.queries[0].query_type == "video→video"


def test_a_file_under_a_uri_base_resolves_to_a_uri() -> None:
    seen: list[str] = []

    def exists(path: str) -> bool:
        seen.append(path)
        return True

    loaded = parse_qrels(
        json.dumps({"query_id": "q", "file": "img/../cat.png", "relevant": ["images/cat"]}),
        known=known,
        modality_of=modality_of,
        base_dir="s3://bucket/qrels",
        file_exists=exists,
    )

    assert seen == ["s3://bucket/qrels/cat.png"]
    assert loaded.queries[0].file == "s3://bucket/qrels/cat.png"


@pytest.mark.parametrize(
    ("relevant", "query_type"),
    [
        (["text/bread"], "text→text"),
        (["pdf/manual#page=1", "images/cat"], "text→image+pdf"),
        ({"pdf/manual": 0, "text/bread": 1}, "text→text"),  # the relevant ones decide
        ({"pdf/manual": 0}, "text→pdf"),  # none relevant: all judged ones decide
    ],
)
def test_a_missing_type_is_derived_from_the_query_and_the_relevant_targets(
    relevant: Any, query_type: str
) -> None:
    loaded = parse({"query_id": "q", "text": "x", "relevant": relevant})

    assert loaded.queries[0].query_type == query_type


def test_a_given_type_is_kept_and_targets_of_unknown_modality_derive_unknown() -> None:
    loaded = parse_qrels(
        "\n".join(
            [
                json.dumps({"query_id": "a", "text": "x", "relevant": ["p#page=1"], "type": "T"}),
                json.dumps({"query_id": "b", "text": "x", "relevant": ["p#page=1"]}),
            ]
        ),
        known=lambda _: True,
        modality_of=lambda _: None,
        base_dir="/",
        file_exists=lambda _: True,
    )

    assert [query.query_type for query in loaded.queries] == ["T", "text→unknown"]


def test_bad_rows_are_reported_by_line_and_the_good_ones_still_load() -> None:
    loaded = parse(
        {"query_id": "q1", "text": "a", "relevant": ["text/bread"]},
        "",
        "{not json",
        {"query_id": "q2", "text": "", "relevant": ["text/bread"]},
        {"query_id": "q3", "text": "b", "relevant": ["text/rye"]},
        "   ",
    )

    assert [query.query_id for query in loaded.queries] == ["q1", "q3"]
    assert [query.row for query in loaded.queries] == [1, 5]
    assert [(error.row, error.query_id) for error in loaded.errors] == [(3, None), (4, "q2")]
    assert not loaded.ok
    assert str(loaded.errors[1]) == "row 4 (query 'q2'): text must be a non-empty string, got ''"
    assert str(loaded.errors[0]).startswith("row 3: not valid JSON: ")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('["q1", "text"]', "expected a JSON object, got list"),
        ('"q1"', "expected a JSON object, got str"),
        ({"text": "a", "relevant": ["text/bread"]}, "missing query_id"),
        ({"query_id": 7, "text": "a", "relevant": ["text/bread"]}, "query_id must be a non-empty"),
        (
            {"query_id": " ", "text": "a", "relevant": ["text/bread"]},
            "query_id must be a non-empty",
        ),
        ({"query_id": "q", "relevant": ["text/bread"]}, "give text or file: the query has neither"),
        (
            {"query_id": "q", "text": "a", "file": "cat.png", "relevant": ["text/bread"]},
            "give text or file, not both",
        ),
        ({"query_id": "q", "text": "", "relevant": ["text/bread"]}, "text must be a non-empty"),
        ({"query_id": "q", "text": " \n", "relevant": ["text/bread"]}, "text must be a non-empty"),
        ({"query_id": "q", "text": 3, "relevant": ["text/bread"]}, "text must be a non-empty"),
        (
            {"query_id": "q", "text": "x" * (TEXT_QUERY_MAX_CHARS + 1), "relevant": ["text/bread"]},
            "text has 8,193 characters, over the 8,192",
        ),
        ({"query_id": "q", "file": "gone.png", "relevant": ["images/cat"]}, "query file not found"),
        ({"query_id": "q", "file": "", "relevant": ["images/cat"]}, "file must be a non-empty"),
        ({"query_id": "q", "file": "notes.pdf", "relevant": ["images/cat"]}, "is not an image"),
        ({"query_id": "q", "text": "a"}, "missing relevant"),
        ({"query_id": "q", "text": "a", "relevant": []}, "relevant is empty"),
        ({"query_id": "q", "text": "a", "relevant": {}}, "relevant is empty"),
        ({"query_id": "q", "text": "a", "relevant": "text/bread"}, "relevant must be a list"),
        ({"query_id": "q", "text": "a", "relevant": [3]}, "relevant ids must be non-empty"),
        ({"query_id": "q", "text": "a", "relevant": [""]}, "relevant ids must be non-empty"),
        ({"query_id": "q", "text": "a", "relevant": ["text/rye", "text/rye"]}, "lists 'text/rye'"),
        ({"query_id": "q", "text": "a", "relevant": {"text/rye": -1}}, "is negative (-1)"),
        ({"query_id": "q", "text": "a", "relevant": {"text/rye": 1.5}}, "must be an integer"),
        ({"query_id": "q", "text": "a", "relevant": {"text/rye": "2"}}, "must be an integer"),
        ({"query_id": "q", "text": "a", "relevant": {"text/rye": True}}, "must be an integer"),
        ({"query_id": "q", "text": "a", "relevant": ["text/rye"], "type": ""}, "type must be"),
        (
            {"query_id": "q", "text": "a", "relevant": ["text/brad", "pdf/manul#page=1"]},
            "none of the relevant ids is in the index: ['text/brad', 'pdf/manul#page=1']",
        ),
        (
            {"query_id": "q", "text": "a", "relevant": {"text/brad": 1, "text/rye": 0}},
            "none of the relevant ids is in the index: ['text/brad']",
        ),
        (
            {"query_id": "q", "text": "a", "relevant": ["pdf/manual", "pdf/manual#page=2"]},
            "mixes item ids ['pdf/manual'] with unit keys",
        ),
    ],
)
def test_each_kind_of_bad_row_is_an_error_that_says_what_is_wrong(row: Any, message: str) -> None:
    error = only_error(parse(row))

    assert error.row == 1
    assert message in error.message


def test_a_duplicate_query_id_is_an_error_on_the_later_row() -> None:
    loaded = parse(
        {"query_id": "q1", "text": "a", "relevant": ["text/bread"]},
        {"query_id": "q1", "text": "b", "relevant": ["text/rye"]},
    )

    assert [query.text for query in loaded.queries] == ["a"]
    assert loaded.errors == (QrelsError(2, "q1", "duplicate query_id (first on row 1)"),)


def test_some_unknown_ids_are_a_warning_and_stay_judged() -> None:
    loaded = parse({"query_id": "q", "text": "a", "relevant": ["text/bread", "text/brad"]})

    assert loaded.ok
    assert loaded.queries[0].grades == {"text/bread": 1, "text/brad": 1}
    (warning,) = loaded.warnings
    assert (warning.row, warning.query_id) == (1, "q")
    assert "ids not in the index: ['text/brad']" in warning.message


def test_a_query_with_no_relevant_entry_and_unknown_fields_loads_with_warnings() -> None:
    loaded = parse({"query_id": "q", "text": "a", "relevant": {"text/bread": 0}, "note": "?"})

    assert loaded.ok
    assert loaded.queries[0].relevant == frozenset()
    messages = [warning.message for warning in loaded.warnings]
    assert messages == [
        "no entry has grade ≥ 1: the query scores 0 on every metric",
        "ignored unknown fields ['note']",
    ]


def test_rows_end_only_at_newlines_and_crlf_files_load() -> None:
    row = json.dumps(
        {"query_id": "q", "text": "a\u2028b", "relevant": ["text/rye"]}, ensure_ascii=False
    )
    loaded = parse(
        row + "\r", "\r", json.dumps({"query_id": "r", "text": "c", "relevant": ["text/rye"]})
    )

    assert [query.text for query in loaded.queries] == ["a\u2028b", "c"]
    assert [query.row for query in loaded.queries] == [1, 3]


def test_a_text_of_exactly_the_limit_loads() -> None:
    loaded = parse({"query_id": "q", "text": "x" * TEXT_QUERY_MAX_CHARS, "relevant": ["text/rye"]})

    assert loaded.ok


def _write_qrels(directory: Path, content: bytes) -> Path:
    (directory / "images").mkdir()
    (directory / "images" / "cat.png").write_bytes(b"\x89PNG")
    path = directory / "qrels.jsonl"
    path.write_bytes(content)
    return path


ROWS = (
    '{"query_id": "q1", "file": "images/cat.png", "relevant": ["images/cat"]}\n'
    '{"query_id": "q2", "file": "images/dog.png", "relevant": ["images/dog"]}\n'
)


def test_read_qrels_from_a_local_path_resolves_files_beside_the_qrels_file(tmp_path: Path) -> None:
    path = _write_qrels(tmp_path, b"\xef\xbb\xbf" + ROWS.encode())

    loaded = read_qrels(str(path), known=known, modality_of=modality_of)

    assert [query.file for query in loaded.queries] == [(tmp_path / "images/cat.png").as_posix()]
    assert loaded.errors[0].row == 2
    assert loaded.errors[0].message.startswith("query file not found: ")


def test_read_qrels_through_a_pyarrow_filesystem(tmp_path: Path) -> None:
    _write_qrels(tmp_path, ROWS.encode())
    filesystem = pafs.SubTreeFileSystem(tmp_path.as_posix(), pafs.LocalFileSystem())

    loaded = read_qrels("qrels.jsonl", known=known, modality_of=modality_of, filesystem=filesystem)

    assert [query.file for query in loaded.queries] == ["images/cat.png"]
    assert [error.row for error in loaded.errors] == [2]


def test_read_qrels_with_an_explicit_base_dir(tmp_path: Path) -> None:
    _write_qrels(tmp_path, b"")
    (tmp_path / "labels").mkdir()
    path = tmp_path / "labels" / "qrels.jsonl"
    path.write_text(ROWS.splitlines()[0], encoding="utf-8")

    loaded = read_qrels(
        str(path), known=known, modality_of=modality_of, base_dir=tmp_path.as_posix()
    )

    assert loaded.ok
    assert loaded.queries[0].file == (tmp_path / "images/cat.png").as_posix()


def test_a_qrels_file_that_is_not_utf8_raises(tmp_path: Path) -> None:
    path = _write_qrels(tmp_path, '{"query_id": "q\xe9"}'.encode("latin-1"))

    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_qrels(str(path), known=known, modality_of=modality_of)
