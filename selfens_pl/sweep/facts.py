"""``facts.jsonl``: the sweep's engine rows, one JSON line per fact, resumable fact by fact."""

from __future__ import annotations

import json
from pathlib import Path


class FactsFile:
    """``facts.jsonl`` (one engine row per fact) with ``facts.settings.json``: rows written with other settings are
    never reused (the file is started afresh), a half-written last line is dropped."""

    def __init__(self, folder: Path, settings: dict):
        self.path, self.settings_path = folder / "facts.jsonl", folder / "facts.settings.json"
        self.settings = json.loads(json.dumps(settings))

    def load(self) -> dict[str, dict]:
        try:
            same = json.loads(self.settings_path.read_text()) == self.settings
        except (OSError, json.JSONDecodeError):
            same = False
        if not same or not self.path.exists():
            return {}
        rows = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # an interrupted write: that fact is answered again
                continue
            rows[row["id"]] = row
        return rows

    def start(self, kept: dict[str, dict]) -> None:
        """Rewrite the file with ``kept`` rows only (drops partial lines and rows of other settings)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.settings_path.write_text(json.dumps(self.settings, indent=2) + "\n")
        with self.path.open("w", encoding="utf-8") as fh:
            for row in kept.values():
                fh.write(json.dumps(row) + "\n")

    def append(self, rows: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
