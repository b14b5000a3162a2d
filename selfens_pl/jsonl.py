"""JSON Lines files: reading, appending, resuming and writing records atomically (every output of the package).

Below every layer: imports nothing of the package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from selfens_pl.errors import UserError


def decode_utf8(data: bytes, source) -> str:
    """``data`` decoded as UTF-8, or a ValueError naming ``source``, the offset of the first bad byte and its line
    (a file saved as Latin-1 or UTF-16, say): the one line a user error prints."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{source}: not UTF-8 at byte {exc.start} (line {line}: byte 0x{data[exc.start]:02x}); "
                         "save the file as UTF-8") from None


# -- resumable JSONL output ---------------------------------------------------------------------------------------
def resume_jsonl(path: str | Path, check: Callable[[int, dict], None], tool: str = "selfens_pl") -> dict[str, dict]:
    """Records already in ``path`` by id, after dropping a half-written last line (one without its newline, as
    an interrupted append leaves it). ``check(line_number, record)`` raises for a record this run cannot extend.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a half-written line
    if end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(end)
        print(f"[{tool}] {path}: dropped a half-written last line ({len(data) - end} bytes)")
    records: dict[str, dict] = {}
    for number, line in enumerate(decode_utf8(data[:end], path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number}: invalid JSON ({exc.msg}); fix or delete the file") from None
        if not isinstance(rec, dict) or not rec.get("id"):
            raise UserError(f"{path}: line {number}: expected an object with an 'id'")
        if str(rec["id"]) in records:
            raise UserError(f"{path}: line {number}: id {rec['id']!r} is written twice")
        check(number, rec)
        records[str(rec["id"])] = rec
    return records


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


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append ``records``, one JSON line each, in a single write, then flush to disk."""
    if not records:
        return
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
    return records


def sort_records(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (str(r["id"]), r.get("paraphrase_index") or 0))


def write_records(path: Path, records: list[dict]) -> list[dict]:
    """Write ``records`` ordered by (id, paraphrase index), atomically; returns them in that order."""
    records = sort_records(records)
    _atomic_write(path, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))
    return records


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
