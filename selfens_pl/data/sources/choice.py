"""Multiple-choice files: one question (and its paraphrases), its options and the index of the right one.

A record (JSONL / JSON / parquet, one object each)::

    {"id": "q1", "question": "[MASK] is the capital of France.", "paraphrases": ["France's capital is [MASK]."],
     "options": ["Lyon", "Paris", "Nice", "Lille"], "gold": 1}

* ``id``: optional (else the line number, as ``--data.source auto`` names records);
* ``question`` and/or ``paraphrases``: the ways of asking, as in an open-question file (the question first; a first
  paraphrase equal to it is not asked twice);
* ``options``: ``[O]`` the answer texts, at least 2, distinct, non-empty;
* the right option, one of: ``gold`` (its 0-based index), ``answer_index`` (the same) or ``answer`` (its text,
  which must be one of the options); none of them: an unscored file (``--model.score false``).

A group keeps ``options`` and ``gold`` (the index, ``None`` when absent) and sets ``answers`` to the gold option's
text, so the open-question checks that need answers still see some; :func:`selfens_pl.scoring.choice.score_choice`
scores a choice record by its index. Each bad record is one line naming it (file, line, id, field).
"""

from __future__ import annotations

from selfens_pl.data.records import check_record, check_str, check_str_list, read_records
from selfens_pl.data.sources.myriadlama import first_jsonl_record
from selfens_pl.errors import UserError

#: The fields that name a record's right option, in the order they are read.
GOLD_FIELDS = ("gold", "answer_index", "answer")


def is_choice_file(path: str) -> bool:
    """A local ``.jsonl`` file whose first record has ``options``: what ``--data.source auto`` reads as multiple
    choice (a ``.json`` / ``.parquet`` one needs ``--data.source choice``)."""
    first = first_jsonl_record(path)
    return first is not None and "options" in first


def load_choice_groups(path: str) -> list[dict]:
    """Groups ``{id, paraphrases, answers, confidences: None, options, gold}`` of the multiple-choice file ``path``
    (module docstring); one UserError naming the first bad record."""
    unit, rows = read_records(path, allow_hub=False)
    groups, seen = [], {}
    for number, rec in rows:
        check_record(path, unit, number, rec)
        key = str(number) if rec.get("id") in (None, "") else str(rec["id"])
        where = f"{path}: {unit} {number} (record {key!r})"
        paraphrases = _paraphrases(path, unit, number, rec, where)
        options = _options(rec, where)
        gold = _gold(rec, options, where)
        if key in seen:
            raise UserError(f"{path}: {unit} {number}: id {key!r} repeats {unit} {seen[key]}")
        seen[key] = number
        groups.append({"id": key, "paraphrases": paraphrases,
                       "answers": [] if gold is None else [options[gold]], "confidences": None,
                       "options": options, "gold": gold})
    if not groups:
        raise UserError(f"{path}: no records")
    return groups


def _paraphrases(path: str, unit: str, number: int, rec: dict, where: str) -> list[str]:
    if "question" not in rec and "paraphrases" not in rec:
        raise UserError(f"{where}: a multiple-choice record needs 'question' or 'paraphrases' (or both)")
    paraphrases = check_str_list(path, unit, number, rec, "paraphrases", allow_empty="question" in rec) \
        if "paraphrases" in rec else []
    if "question" in rec:
        check_str(path, unit, number, rec, "question")
        if paraphrases and paraphrases[0].strip() == rec["question"].strip():
            paraphrases = paraphrases[1:]
        paraphrases = [rec["question"], *paraphrases]
    if any(not p.strip() for p in paraphrases):
        raise UserError(f"{where}: an empty paraphrase")
    return list(paraphrases)


def _options(rec: dict, where: str) -> list[str]:
    options = rec.get("options")
    if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
        raise UserError(f"{where}: field 'options' must be a list of non-empty strings, got {options!r}")
    if len(options) < 2:
        raise UserError(f"{where}: field 'options' needs at least 2 options, got {len(options)}")
    stripped = [o.strip() for o in options]
    if len(set(stripped)) != len(stripped):
        raise UserError(f"{where}: field 'options' repeats an option ({stripped})")
    return stripped


def _gold(rec: dict, options: list[str], where: str) -> int | None:
    given = [field for field in GOLD_FIELDS if rec.get(field) is not None]
    if len(given) > 1:
        raise UserError(f"{where}: give the right option once (one of {', '.join(GOLD_FIELDS)}), got {given}")
    if not given:
        return None
    value = rec[given[0]]
    if given[0] == "answer":
        if not isinstance(value, str) or value.strip() not in options:
            raise UserError(f"{where}: field 'answer' {value!r} is not one of the options {options}")
        return options.index(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(options):
        raise UserError(f"{where}: field {given[0]!r} must be an option index in 0..{len(options) - 1}, "
                        f"got {value!r}")
    return value
