"""JSON Lines files: the package's one reader and its one error policy, appending, resuming and atomic writes.

Every JSONL file the package reads goes through :func:`read_objects` (data files, ``paraphrase`` and ``confidence``
outputs, a predict run's part and merged files, the sweep's ``facts.jsonl``), under one policy:

* **a half-written last line is skipped and said**: a last line without its newline that is not a whole JSON value
  (or not whole UTF-8), as a killed append leaves it. One line names the file and the line; a reader that resumes
  the file (``repair=True``) also cuts it off, so the next append starts on a line of its own. Every line the
  package writes is one complete JSON object followed by a newline, and no proper prefix of a JSON object is valid
  JSON, so a last line without its newline that parses is whole (a file written by hand often ends so) and is kept;
* **any other bad line is one** :class:`~selfens_pl.errors.UserError` naming the file and the line: invalid JSON,
  a value that is not an object, bytes that are not UTF-8 (:func:`decode_utf8`), and, where ids matter
  (:func:`records_by_id`), a record without an ``id`` or an id written twice.

Blank lines are ignored. An append is a batch on disk: a stop signalled while it was in flight takes effect right
after it (:func:`append_jsonl`, :mod:`selfens_pl.stopping`). Below every layer: imports only
:mod:`selfens_pl.errors` and :mod:`selfens_pl.stopping`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import selfens_pl.stopping as stopping
from selfens_pl.errors import UserError

TOOL = "selfens_pl"


def decode_utf8(data: bytes, source) -> str:
    """``data`` decoded as UTF-8, or a UserError naming ``source``, the offset of the first bad byte and its line
    (a file saved as Latin-1 or UTF-16, say): the one line a user error prints."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{source}: not UTF-8 at byte {exc.start} (line {line}: byte 0x{data[exc.start]:02x}); "
                        "save the file as UTF-8") from None


# -- reading: the one policy --------------------------------------------------------------------------------------
def read_objects(path: str | Path, *, name=None, tool: str = TOOL, repair: bool = False,
                 report: bool = True) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of the JSONL file ``path`` (1-based numbers), under the
    module's policy. ``name``: how messages call the file (default ``path``); ``tool`` prefixes the printed line.
    ``repair=True`` (a file about to be appended to) cuts a half-written last line off the file and adds the newline
    a whole last line lacks. ``report=False`` prints nothing (a process that is not the one that reports)."""
    path = Path(path)
    name = path if name is None else name
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # what follows the last newline is the only line that can be half-written
    texts = decode_utf8(data[:end], name).split("\n")[:-1]
    if data[end:].strip():
        last = _whole_last_line(data, end, name)
        if last is not None:
            texts.append(last)
            if repair:  # the next append must start on a line of its own
                with path.open("ab") as fh:
                    fh.write(b"\n")
        else:
            if repair:
                with path.open("r+b") as fh:
                    fh.truncate(end)
            if report:
                print(f"[{tool}] {name}: line {len(texts) + 1}: {'dropped' if repair else 'skipped'} a half-written "
                      f"last line ({len(data) - end} bytes, an interrupted write)", flush=True)
    out = []
    for number, text in enumerate(texts, 1):
        if text.strip():
            out.append((number, parse_line(text, name, number)))
    return out


def _whole_last_line(data: bytes, end: int, name) -> str | None:
    """The text after the last newline (``data[end:]``) when it is a whole JSON value, ``None`` when it is
    half-written: cut inside a value or inside a character."""
    try:
        text = data[end:].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":  # a character cut short by the interrupted write
            return None
        decode_utf8(data, name)  # a bad byte: the file is not UTF-8, raised naming the byte
        raise AssertionError(f"{name}: bytes that do not decode passed decode_utf8") from exc
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return None
    return text


def parse_line(text: str, name, number: int) -> dict:
    """One line's JSON object, or the policy's UserError naming ``name`` and line ``number``."""
    return parse_json(text, f"{name}: line {number}", dict)


_KINDS = {dict: "object", list: "array (a list of records)"}


def parse_json(text: str, where: str, kind: type = dict):
    """``text`` parsed as one JSON value of type ``kind`` (``dict`` or ``list``), or one UserError that starts with
    ``where`` (a file, or a file and a line)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f" at line {exc.lineno} column {exc.colno}" if "\n" in text.strip() else ""  # a whole .json file
        raise UserError(f"{where}: invalid JSON ({exc.msg}{at}); fix or delete it") from None
    if not isinstance(value, kind):
        raise UserError(f"{where}: expected a JSON {_KINDS[kind]}, got {type(value).__name__}")
    return value


def read_jsonl(path: str | Path, *, tool: str = TOOL) -> list[dict]:
    """The objects of ``path`` in file order (:func:`read_objects`)."""
    return [obj for _, obj in read_objects(path, tool=tool)]


def records_by_id(name, lines: list[tuple[int, dict]], check: Callable[[int, dict], None] | None = None,
                  ) -> dict[str, dict]:
    """``{str(id): record}`` of numbered records (:func:`read_objects`) where every id must appear once: a record
    without an ``id``, or an id written twice, is a UserError naming ``name`` and the line. ``check(line_number,
    record)`` may raise for a record the caller cannot use."""
    records: dict[str, dict] = {}
    for number, rec in lines:
        if rec.get("id") in (None, ""):
            raise UserError(f"{name}: line {number}: expected an object with an 'id'")
        key = str(rec["id"])
        if key in records:
            raise UserError(f"{name}: line {number}: id {rec['id']!r} is written twice")
        if check is not None:
            check(number, rec)
        records[key] = rec
    return records


# -- resumable JSONL output ---------------------------------------------------------------------------------------
def resume_jsonl(path: str | Path, check: Callable[[int, dict], None], tool: str = TOOL) -> dict[str, dict]:
    """Records already in ``path`` by id (one per id), after cutting off a half-written last line
    (:func:`read_objects` with ``repair``). ``check(line_number, record)`` raises for a record this run cannot
    extend."""
    path = Path(path)
    if not path.is_file():
        return {}
    return records_by_id(path, read_objects(path, tool=tool, repair=True), check)


def pending_groups(path: Path, groups: list[dict], check: Callable[[int, dict], None], tool: str) -> list[dict]:
    """The groups ``path`` does not hold yet (after :func:`resume_jsonl`), announcing reuse or resumption; the
    output folder exists afterwards."""
    done = resume_jsonl(path, check, tool)
    todo = [g for g in groups if g["id"] not in done]
    if not todo:
        print(f"[{tool}] reused {path}: all {len(groups)} records already complete")
    elif done:
        print(f"[{tool}] resuming {path}: {len(groups) - len(todo)} of {len(groups)} records done")
    path.parent.mkdir(parents=True, exist_ok=True)
    return todo


# -- writing ------------------------------------------------------------------------------------------------------
def json_lines(records: list[dict]) -> str:
    """``records`` as JSON Lines: one object and its newline each (non-ASCII kept as it is)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append ``records``, one JSON line each, in a single write, then flush to disk. Inside a loop that stops after
    the batch in flight (:func:`selfens_pl.stopping.after_batch`), a SIGTERM or SIGINT received meanwhile stops it
    here, once the batch is written."""
    if records:
        with Path(path).open("a", encoding="utf-8") as fh:
            fh.write(json_lines(records))
            fh.flush()
            os.fsync(fh.fileno())
    stopping.checkpoint()


def sort_records(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (str(r["id"]), r.get("paraphrase_index") or 0))


def write_records(path: Path, records: list[dict]) -> list[dict]:
    """Write ``records`` ordered by (id, paraphrase index), atomically; returns them in that order."""
    records = sort_records(records)
    atomic_write(path, json_lines(records))
    return records


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader sees the old file or the new
    one, never a part of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
