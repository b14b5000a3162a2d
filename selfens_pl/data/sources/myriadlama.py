"""MyriadLAMA: loading hub rows, grouping them into facts, splitting and
choosing paraphrases reproducibly."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from selfens_pl.data.records import check_record, check_str, check_str_list, read_records, record_error
from selfens_pl.errors import UserError
from selfens_pl.jsonl import decode_utf8

MASK = "[MASK]"


def load_myriadlama_rows(source: str = "iszhaoxin/MyriadLAMA", split: str = "train") -> list[dict]:
    """Load rows ``uuid, rel_uri, sub_ent, obj_aliases, template, is_manual``.

    ``rel_uri`` is optional (unused downstream) but must be a string if given.
    """
    unit, raw = read_records(source, split)
    rows = []
    for number, rec in raw:
        check_record(source, unit, number, rec)
        for field in ("uuid", "sub_ent", "template"):
            check_str(source, unit, number, rec, field)
        check_str(source, unit, number, rec, "rel_uri", optional=True)
        aliases = check_str_list(source, unit, number, rec, "obj_aliases")
        if "is_manual" not in rec:
            raise record_error(source, unit, number, "is_manual", "is missing")
        if not isinstance(rec["is_manual"], bool):
            raise record_error(source, unit, number, "is_manual", f"must be a boolean, got {rec['is_manual']!r}")
        rows.append(
            {
                "uuid": rec["uuid"],
                "rel_uri": rec.get("rel_uri"),
                "sub_ent": rec["sub_ent"],
                "obj_aliases": list(aliases),
                "template": rec["template"],
                "is_manual": rec["is_manual"],
            }
        )
    return rows


def _dedupe(items) -> list:
    return list(dict.fromkeys(items))


def group_myriadlama(rows) -> list[dict]:
    """Group rows by ``uuid`` (first-appearance order) into facts.

    Each template gets ``[X]`` -> ``sub_ent`` and ``[Y]`` -> ``[MASK]``; exact
    duplicate paraphrases of a fact are dropped (a manual one wins over an
    identical auto one).
    """
    facts: dict[str, dict] = {}
    seen: dict[str, set] = {}
    for row in rows:
        uuid = row["uuid"]
        template = row["template"]
        if "[Y]" not in template:
            raise UserError(f"MyriadLAMA fact {uuid}: template lacks the [Y] placeholder: {template!r}")
        if uuid not in facts:
            facts[uuid] = {
                "uuid": uuid,
                "answers": _dedupe(row["obj_aliases"]),
                "subject": row["sub_ent"],
                "manual_paraphrases": [],
                "auto_paraphrases": [],
            }
            seen[uuid] = set()
        text = template.replace("[X]", row["sub_ent"]).replace("[Y]", MASK)
        if text in seen[uuid]:
            continue
        seen[uuid].add(text)
        key = "manual_paraphrases" if row["is_manual"] else "auto_paraphrases"
        facts[uuid][key].append(text)
    return list(facts.values())


def load_myriadlama_groups(path) -> list[dict]:
    """Read already-grouped facts (``uuid, answers, manual_paraphrases,
    auto_paraphrases``) from a local jsonl/json/parquet file or saved dataset."""
    path = os.fspath(path)
    unit, raw = read_records(path, allow_hub=False)
    facts = []
    for number, rec in raw:
        check_record(path, unit, number, rec)
        check_str(path, unit, number, rec, "uuid")
        answers = check_str_list(path, unit, number, rec, "answers")
        manual = check_str_list(path, unit, number, rec, "manual_paraphrases", allow_empty=True)
        auto = check_str_list(path, unit, number, rec, "auto_paraphrases", allow_empty=True)
        if not manual and not auto:
            raise record_error(path, unit, number, "manual_paraphrases",
                               "and 'auto_paraphrases' are both empty")
        facts.append(
            {
                "uuid": rec["uuid"],
                "answers": list(answers),
                "manual_paraphrases": list(manual),
                "auto_paraphrases": list(auto),
            }
        )
    return facts


def split_facts(facts, test_size: int = 2000, seed: int = 42) -> tuple[list, list]:
    """Deterministic ``(train, test)`` split, independent of input order."""
    facts = sorted(facts, key=lambda f: f["uuid"])
    if not 0 <= test_size <= len(facts):
        raise UserError(f"test_size={test_size} must be between 0 and the number of facts ({len(facts)})")
    random.Random(seed).shuffle(facts)
    return facts[test_size:], facts[:test_size]


def _uuid_rng(uuid: str) -> random.Random:
    return random.Random(int(hashlib.sha256(uuid.encode("utf-8")).hexdigest(), 16))


def _sample_in_order(rng: random.Random, items: list, n: int) -> list:
    return [items[i] for i in sorted(rng.sample(range(len(items)), n))]


def select_paraphrases(fact, num_manual: int, num_auto: int) -> list[str]:
    """``num_manual`` manual then ``num_auto`` auto paraphrases, chosen by an
    RNG seeded from the fact's uuid (stable across processes)."""
    uuid = fact["uuid"]
    manual, auto = fact["manual_paraphrases"], fact["auto_paraphrases"]
    for kind, n, pool in (("manual", num_manual, manual), ("auto", num_auto, auto)):
        if n < 0 or n > len(pool):
            raise UserError(
                f"MyriadLAMA fact {uuid}: asked for {n} {kind} paraphrases but {len(pool)} are available"
            )
    rng = _uuid_rng(uuid)
    return _sample_in_order(rng, manual, num_manual) + _sample_in_order(rng, auto, num_auto)


def myriadlama_groups(facts, num_manual: int = 1, num_auto: int = 0) -> list[dict]:
    """Turn facts into package groups with the selected paraphrases and the fact's ``subject`` (the hub rows'
    ``sub_ent``, or recovered from ALL the fact's paraphrases, ``None`` if it cannot be: see
    :mod:`selfens_pl.data.content_free`), which content-free prompts for calibration need."""
    from selfens_pl.data.content_free import recover_subject

    if num_manual + num_auto <= 0:
        raise UserError(f"num_manual={num_manual} + num_auto={num_auto} must select at least one paraphrase")
    return [
        {
            "id": fact["uuid"],
            "paraphrases": select_paraphrases(fact, num_manual, num_auto),
            "answers": list(fact["answers"]),
            "confidences": None,
            "subject": fact.get("subject") or recover_subject(fact["manual_paraphrases"] + fact["auto_paraphrases"]),
        }
        for fact in facts
    ]


def myriadlama_few_shot(train_facts, k: int = 5, seed: int = 42) -> list[dict]:
    """Deterministic demonstrations ``{"question": manual paraphrase, "answer": answers[0]}``
    (independent of the input order of ``train_facts``)."""
    pool = sorted((f for f in train_facts if f["manual_paraphrases"]), key=lambda f: f["uuid"])
    if k < 0 or k > len(pool):
        raise UserError(f"k={k} few-shot examples requested but only {len(pool)} facts have manual paraphrases")
    rng = random.Random(seed)
    rng.shuffle(pool)
    return [{"question": rng.choice(f["manual_paraphrases"]), "answer": f["answers"][0]} for f in pool[:k]]


def is_grouped_myriadlama(path: str) -> bool:
    """A local JSONL whose first record is already grouped by fact (``manual_paraphrases``), not hub rows."""
    first = first_jsonl_record(path)
    return first is not None and "manual_paraphrases" in first


def first_jsonl_record(path: str) -> dict | None:
    """The first record of a local ``.jsonl`` file (what ``--data.source auto`` peeks at), or ``None`` when
    ``path`` is not one or its first line is no JSON object (the reader then reports that line)."""
    local = Path(path).expanduser()
    if not local.is_file() or local.suffix != ".jsonl":
        return None
    head = b""  # the file up to its first record: the reader reads the rest (and reports a bad byte there)
    with local.open("rb") as fh:
        for raw in fh:
            head += raw
            if raw.strip():
                break
    first = decode_utf8(head, path).strip() or "{}"  # one line naming the byte, as every other reader
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
