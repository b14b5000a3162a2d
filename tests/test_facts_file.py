"""``facts.jsonl``, the sweep's resumable engine rows, under the package's one JSONL policy: a half-written last
line is skipped (that fact is answered again) and said; any other bad line is one error naming file and line."""

from __future__ import annotations

import json

import pytest

from selfens_pl.errors import UserError
from selfens_pl.sweep.facts import FactsFile

SETTINGS = {"model": "tiny", "ks": [1, 3]}


def started(tmp_path, rows: list[dict]) -> FactsFile:
    store = FactsFile(tmp_path, SETTINGS)
    store.start({})
    store.append(rows)
    return store


def test_a_half_written_last_line_is_skipped_and_said(tmp_path, capsys):
    store = started(tmp_path, [{"id": "f1", "a": 1}, {"id": "f2", "a": 2}])
    with store.path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "f3", "a": 3})[:9])
    assert list(FactsFile(tmp_path, SETTINGS).load()) == ["f1", "f2"]
    assert f"{store.path}: line 3: skipped a half-written last line" in capsys.readouterr().out


def test_a_bad_middle_line_is_an_error_naming_file_and_line(tmp_path):
    store = started(tmp_path, [{"id": "f1", "a": 1}])
    with store.path.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "f2", "a"\n' + json.dumps({"id": "f3", "a": 3}) + "\n")
    with pytest.raises(UserError, match=rf"^{store.path}: line 2: invalid JSON"):
        FactsFile(tmp_path, SETTINGS).load()


def test_a_repeated_fact_is_an_error(tmp_path):
    store = started(tmp_path, [{"id": "f1", "a": 1}, {"id": "f1", "a": 2}])
    with pytest.raises(UserError, match=rf"^{store.path}: line 2: id 'f1' is written twice"):
        store.load()


def test_rows_of_other_settings_are_not_reused_and_that_is_said(tmp_path, capsys):
    started(tmp_path, [{"id": "f1", "a": 1}])
    assert FactsFile(tmp_path, {**SETTINGS, "ks": [1]}).load() == {}
    assert "written with other settings" in capsys.readouterr().out
    assert list(FactsFile(tmp_path, SETTINGS).load()) == ["f1"]
