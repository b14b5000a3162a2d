"""Reading and validating records: the small reader every source and the groups loader share.

:func:`read_records` reads a local ``.jsonl`` / ``.json`` / ``.parquet`` file, a ``datasets.save_to_disk``
directory, or (for anything else) a Hugging Face hub id; the ``check_*`` helpers raise one ``UserError`` naming
the source, the line (or record) and the field. A ``.jsonl`` file is read under the package's one JSONL policy
(:func:`selfens_pl.jsonl.read_objects`: a half-written last line, as an interrupted ``paraphrase`` leaves it, is
skipped and said; any other bad line is an error naming it). A ``.jsonl`` / ``.json`` file that is not UTF-8 is
refused with its byte offset (:func:`decode_utf8`), never read with replacement characters.
"""

from __future__ import annotations

import os
import re

from selfens_pl.errors import UserError
from selfens_pl.jsonl import decode_utf8, parse_json, read_objects

_EXTS = (".jsonl", ".json", ".parquet")
# owner/name or name, as the hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def looks_like_path(source: str) -> bool:
    # os.sep is "/" on POSIX, which every "owner/name" hub id contains, so a
    # bare "contains a separator" test cannot be used; anything that is not a
    # well-formed hub id, or that is anchored / has a data-file suffix, is a path.
    return (
        source.lower().endswith(_EXTS)
        or source.startswith((".", "~", os.sep))
        or (os.altsep is not None and os.altsep in source)
        or not _HUB_ID.match(source)
    )


def read_records(source: str, split: str | None = None, *, allow_hub: bool = True):
    """Return ``(unit, [(number, record), ...])`` for ``source``.

    ``unit`` is ``"line"`` for jsonl (numbers are 1-based line numbers) and
    ``"record"`` otherwise (1-based position).  ``split`` is only used for the
    hub and for ``DatasetDict`` directories.
    """
    path = os.path.expanduser(str(source))
    if os.path.isfile(path):
        low = path.lower()
        if low.endswith(".jsonl"):
            return "line", read_objects(path, name=source)
        if low.endswith(".json"):
            with open(path, "rb") as fh:
                data = parse_json(decode_utf8(fh.read(), source), source, list)
            return "record", list(enumerate(data, 1))
        if low.endswith(".parquet"):
            import pyarrow.parquet as pq

            return "record", list(enumerate(pq.read_table(path).to_pylist(), 1))
        raise UserError(f"{source}: unsupported file type (expected one of {', '.join(_EXTS)})")
    if os.path.isdir(path):
        import datasets

        if os.path.exists(os.path.join(path, "dataset_dict.json")):
            dd = datasets.load_from_disk(path)
            if split not in dd:
                raise UserError(f"{source}: split {split!r} not found (available: {sorted(dd)})")
            ds = dd[split]
        elif os.path.exists(os.path.join(path, "state.json")):
            ds = datasets.load_from_disk(path)
        else:  # a local folder of data files: let `datasets` pick the loader
            ds = datasets.load_dataset(path, split=split)
        return "record", list(enumerate(ds, 1))
    if not allow_hub or looks_like_path(str(source)):
        raise FileNotFoundError(f"no such file or directory: {source}")
    import datasets

    return "record", list(enumerate(datasets.load_dataset(source, split=split), 1))


def record_error(source, unit: str, number: int, field: str, problem: str) -> UserError:
    return UserError(f"{source}: {unit} {number}: field {field!r} {problem}")


def check_record(source, unit, number, rec) -> None:
    if not isinstance(rec, dict):
        raise UserError(f"{source}: {unit} {number}: expected an object, got {type(rec).__name__}")


def check_str(source, unit, number, rec, field, *, optional=False) -> None:
    if field not in rec or (optional and rec[field] is None):
        if optional:
            return
        raise record_error(source, unit, number, field, "is missing")
    value = rec[field]
    if not isinstance(value, str) or (not optional and not value.strip()):
        raise record_error(source, unit, number, field, f"must be a non-empty string, got {value!r}")


def check_str_list(source, unit, number, rec, field, *, allow_empty=False) -> list[str]:
    if field not in rec:
        raise record_error(source, unit, number, field, "is missing")
    value = rec[field]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise record_error(source, unit, number, field, f"must be a list of strings, got {value!r}")
    if not value and not allow_empty:
        raise record_error(source, unit, number, field, "must be a non-empty list")
    return value
