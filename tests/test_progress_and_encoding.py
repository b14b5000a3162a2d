"""The progress bar of the verbs outside Lightning (count, elapsed, remaining time, rate; plain lines when not on a
terminal) and the one-line refusal of a data file that is not UTF-8, for every reader and through the command line."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from selfens_pl.data.records import read_records
from selfens_pl.progress import ProgressBar

ROOT = Path(__file__).resolve().parents[1]


def test_plain_lines_every_n_items_and_at_the_end():
    out = io.StringIO()  # not a terminal: plain lines
    with ProgressBar(10, "Paraphrasing", unit="questions", stream=out, every=4) as bar:
        for _ in range(10):
            bar.advance()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["4/10", "8/10", "10/10"]
    assert all(line.startswith("Paraphrasing ") and line.endswith(" questions/s") and " • " in line for line in lines)
    assert lines[-1].split(" • ")[1].startswith("0:00:00")  # nothing remains


def test_resumed_run_counts_only_its_own_rate():
    out = io.StringIO()
    bar = ProgressBar(100, "Paraphrasing", unit="questions", done=90, stream=out)
    assert bar.rate() is None and bar.remaining() is None
    assert "90/100" in bar.line() and "-:--:--" in bar.line()
    bar.advance(10)
    assert out.getvalue().split()[1] == "100/100"


def latin1(tmp_path: Path, name: str) -> Path:
    """Two records, the second with a Latin-1 "é" at byte 55 (0-based: 39 bytes of line 1, 16 of line 2)."""
    path = tmp_path / name
    path.write_bytes(b'{"question": "ok?", "answers": ["a"]}\n{"question": "caf\xe9?", "answers": ["b"]}\n')
    return path


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.json"])
def test_reader_names_the_file_and_the_byte(tmp_path, name):
    path = latin1(tmp_path, name)
    with pytest.raises(ValueError, match=r"bad\.jsonl?: not UTF-8 at byte 55 \(line 2: byte 0xe9\)"):
        read_records(str(path))


def test_command_line_prints_one_line_and_exits_2(tmp_path):
    path = latin1(tmp_path, "questions.jsonl")
    proc = subprocess.run([sys.executable, "-m", "selfens_pl", "paraphrase", "--data.path", str(path), "--data.split",
                           "train", "--output", str(tmp_path / "out.jsonl")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"selfens_pl: error: {path}: not UTF-8 at byte 55 (line 2: byte 0xe9); save the file as UTF-8"]
    assert not (tmp_path / "out.jsonl").exists()


def test_a_myriadlama_file_that_is_not_utf8_is_one_error_naming_the_byte(tmp_path):
    """The data module peeks at a local MyriadLAMA file to tell grouped facts from hub rows: through the same
    decoder, so the first line's bad byte is the same one-line error."""
    from selfens_pl.data.datamodule import ParaphraseDataModule

    path = tmp_path / "facts.jsonl"
    path.write_bytes(b'{"uuid": "caf\xe9", "answers": ["a"], "manual_paraphrases": ["[MASK] x."]}\n')
    dm = ParaphraseDataModule(path=str(path), source="myriadlama", task="myriadlama")
    with pytest.raises(ValueError, match=r"facts\.jsonl: not UTF-8 at byte 13 \(line 1: byte 0xe9\)"):
        dm.setup()


def test_a_bad_byte_after_the_first_myriadlama_record_is_the_readers_error(tmp_path):
    """The peek reads only up to the first record; a bad byte further down is the grouped reader's one-line error,
    with its offset in the whole file."""
    from selfens_pl.data.datamodule import ParaphraseDataModule

    path = tmp_path / "facts.jsonl"
    good = b'{"uuid": "u1", "answers": ["a"], "manual_paraphrases": ["[MASK] x."]}\n'
    path.write_bytes(b"\n" + good + b'{"uuid": "caf\xe9", "answers": ["a"], "manual_paraphrases": ["[MASK] y."]}\n')
    dm = ParaphraseDataModule(path=str(path), source="myriadlama", task="myriadlama")
    with pytest.raises(ValueError, match=rf"facts\.jsonl: not UTF-8 at byte {1 + len(good) + 13} \(line 3: byte 0xe9\)"):
        dm.setup()
