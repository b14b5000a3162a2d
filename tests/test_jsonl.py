"""The package's one JSONL policy (:mod:`selfens_pl.jsonl`): a half-written last line is skipped and said (cut off
when resuming); any other bad line is one UserError naming file and line; and every reader of the package follows
it (data files, resumable outputs, a predict run's files, the sweep's facts)."""

from __future__ import annotations

import json

import pytest

from selfens_pl.data.records import read_records
from selfens_pl.errors import UserError
from selfens_pl.jsonl import append_jsonl, read_jsonl, read_objects, records_by_id, resume_jsonl
from selfens_pl.lit.writer import read_done, read_part

A, B, C = {"id": "a", "x": 1}, {"id": "b", "x": "é"}, {"id": "c", "x": [3]}


def lines(*objs) -> str:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)


def no_check(number: int, rec: dict) -> None:
    pass


def test_a_half_written_last_line_is_skipped_and_said(tmp_path, capsys):
    path = tmp_path / "f.jsonl"
    path.write_text(lines(A, B) + json.dumps(C)[:11])
    assert read_objects(path, tool="t") == [(1, A), (2, B)]
    assert capsys.readouterr().out == f"[t] {path}: line 3: skipped a half-written last line (11 bytes, an " \
                                      "interrupted write)\n"
    assert path.read_text() == lines(A, B) + json.dumps(C)[:11]  # reading leaves the file as it is


def test_a_line_cut_inside_a_character_is_half_written_too(tmp_path, capsys):
    path = tmp_path / "f.jsonl"
    path.write_bytes(lines(A).encode() + '{"id": "b", "x": "é'.encode()[:-1])  # the "é" cut after its first byte
    assert read_jsonl(path) == [A]
    assert "line 2: skipped a half-written last line" in capsys.readouterr().out


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path, capsys):
    """No proper prefix of a JSON object parses, so a last line that does is whole (a file written by hand)."""
    path = tmp_path / "f.jsonl"
    path.write_text(lines(A) + json.dumps(B))
    assert read_jsonl(path) == [A, B]
    assert capsys.readouterr().out == ""


def test_resuming_cuts_a_half_written_line_off_and_ends_a_whole_one(tmp_path, capsys):
    path = tmp_path / "f.jsonl"
    path.write_text(lines(A) + json.dumps(B)[:5])
    assert list(resume_jsonl(path, no_check, "t")) == ["a"]
    assert f"[t] {path}: line 2: dropped a half-written last line" in capsys.readouterr().out
    assert path.read_text() == lines(A)
    path.write_text(lines(A) + json.dumps(B))  # whole, without its newline: the next append starts a new line
    assert list(resume_jsonl(path, no_check, "t")) == ["a", "b"]
    append_jsonl(path, [C])
    assert read_jsonl(path) == [A, B, C]


@pytest.mark.parametrize("bad, problem", [
    ('{"id": "b", "x"', r"invalid JSON \(Expecting ':' delimiter\)"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('"text"', "expected a JSON object, got str"),
])
def test_a_bad_middle_line_is_one_error_naming_file_and_line(tmp_path, bad, problem):
    path = tmp_path / "f.jsonl"
    path.write_text(lines(A) + "\n" + bad + "\n" + lines(C))  # line 2 blank: numbers count every line
    with pytest.raises(UserError, match=rf"^{path}: line 3: {problem}") as e:
        read_objects(path)
    assert "\n" not in str(e.value)


def test_a_last_line_that_parses_but_is_not_an_object_is_an_error(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(lines(A) + "[1, 2]")
    with pytest.raises(UserError, match=rf"^{path}: line 2: expected a JSON object, got list"):
        read_objects(path)


def test_a_bad_byte_in_the_last_line_is_not_utf8_not_half_written(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(lines(A).encode() + b'{"id": "caf\xe9"}')
    with pytest.raises(UserError, match=rf"^{path}: not UTF-8 at byte 31 \(line 2: byte 0xe9\)"):
        read_objects(path)


def test_an_empty_file_and_blank_lines_hold_no_records(tmp_path, capsys):
    path = tmp_path / "f.jsonl"
    path.write_text("")
    assert read_objects(path) == []
    path.write_text("\n  \n\n ")
    assert read_objects(path) == []
    assert resume_jsonl(path, no_check) == {}
    assert capsys.readouterr().out == ""


def test_ids_where_they_matter(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(lines(A, B, {"id": "a", "x": 2}))
    with pytest.raises(UserError, match=rf"^{path}: line 3: id 'a' is written twice"):
        resume_jsonl(path, no_check)
    path.write_text(lines(A, {"x": 2}))
    with pytest.raises(UserError, match=rf"^{path}: line 2: expected an object with an 'id'"):
        records_by_id(path, read_objects(path))


def test_a_data_file_follows_the_policy(tmp_path, capsys):
    path = tmp_path / "groups.jsonl"
    path.write_text(lines(A, B) + json.dumps(C)[:4])
    assert read_records(str(path)) == ("line", [(1, A), (2, B)])
    assert "line 3: skipped a half-written last line" in capsys.readouterr().out
    path.write_text(lines(A) + "{oops\n" + lines(B))
    with pytest.raises(UserError, match=rf"^{path}: line 2: invalid JSON"):
        read_records(str(path))


def commit(batch: int, n: int) -> dict:
    return {"_batch": batch, "_records": n}


def test_a_part_file_follows_the_policy(tmp_path, capsys):
    part = tmp_path / "predictions.rank0.jsonl"
    part.write_text(lines(A, commit(0, 1), B) + json.dumps(C)[:6])
    assert read_part(part) == [A]
    out = capsys.readouterr().out
    assert "line 4: skipped a half-written last line" in out
    assert "1 records after the last commit line (a batch cut short) are answered again" in out
    assert read_part(part, report=False) == [A] and capsys.readouterr().out == ""
    part.write_text(lines(A, commit(0, 1)) + "nonsense\n" + lines(B, commit(1, 1)))
    with pytest.raises(UserError, match=rf"^{part}: line 3: invalid JSON"):
        read_done(tmp_path)
    part.write_text(lines(A, B, commit(0, 1)))
    with pytest.raises(UserError, match=rf"^{part}: line 3: commit line of batch 0 counts 1 records, 2 precede it"):
        read_part(part)
    part.write_text(lines({"x": 1}, commit(0, 1)))
    with pytest.raises(UserError, match=rf"^{part}: line 1: a prediction record without an 'id'"):
        read_part(part)


def test_a_json_data_file_is_one_value_checked_the_same_way(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps([A, B], indent=1))
    assert read_records(str(path)) == ("record", [(1, A), (2, B)])
    path.write_text('[\n {"id": "a",\n  "x" 1}\n]')
    with pytest.raises(UserError, match=rf"^{path}: invalid JSON \(Expecting ':' delimiter at line 3 column 7\)"):
        read_records(str(path))
    path.write_text(json.dumps(A))
    with pytest.raises(UserError, match=rf"^{path}: expected a JSON array \(a list of records\), got dict"):
        read_records(str(path))
