"""``facts.jsonl``: the sweep's engine rows, one JSON line per fact, resumable fact by fact."""

from __future__ import annotations

import json
from pathlib import Path

from selfens_pl.errors import UserError
from selfens_pl.jsonl import append_jsonl, atomic_write, json_lines, read_objects, records_by_id


class FactsFile:
    """``facts.jsonl`` (one engine row per fact) with ``facts.settings.json``, under the package's JSONL policy
    (:mod:`selfens_pl.jsonl`): a half-written last line is skipped, and said (that fact is answered again); any
    other bad line, or a fact written twice, is one error naming file and line. Rows written with other settings
    (or with no settings file beside them) are never reused: the file is started afresh, and that is said."""

    def __init__(self, folder: Path, settings: dict):
        self.path, self.settings_path = folder / "facts.jsonl", folder / "facts.settings.json"
        self.settings = json.loads(json.dumps(settings))

    def load(self) -> dict[str, dict]:
        """``{fact id: row}`` of the rows this sweep's settings can reuse."""
        if not self.path.is_file():
            return {}
        if not self.settings_path.is_file():
            print(f"[sweep] {self.path}: no {self.settings_path.name} beside it; its rows are not reused", flush=True)
            return {}
        try:
            old = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.settings_path}: invalid JSON ({exc.msg}); delete it together with "
                            f"{self.path.name}") from None
        if old != self.settings:
            print(f"[sweep] {self.path}: written with other settings; its rows are not reused", flush=True)
            return {}
        return records_by_id(self.path, read_objects(self.path, tool="sweep"))

    def start(self, kept: dict[str, dict]) -> None:
        """Rewrite the file with ``kept`` rows only (drops a half-written line and rows of other settings); both
        files are replaced atomically, the settings first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.settings_path, json.dumps(self.settings, indent=2) + "\n")
        atomic_write(self.path, json_lines(list(kept.values())))

    def append(self, rows: list[dict]) -> None:
        append_jsonl(self.path, rows)
