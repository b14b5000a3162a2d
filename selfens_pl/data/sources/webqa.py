"""WebQuestions loading, grouping and few-shot sampling."""

from __future__ import annotations

import random

from selfens_pl.data.records import check_record, check_str, check_str_list, read_records
from selfens_pl.errors import UserError


def load_webqa(source: str = "stanfordnlp/web_questions", split: str = "test") -> list[dict]:
    """Load WebQuestions records ``{"question", "answers", "url"}``."""
    unit, rows = read_records(source, split)
    records = []
    for number, rec in rows:
        check_record(source, unit, number, rec)
        check_str(source, unit, number, rec, "question")
        answers = check_str_list(source, unit, number, rec, "answers")
        check_str(source, unit, number, rec, "url", optional=True)
        records.append({"question": rec["question"], "answers": list(answers), "url": rec.get("url")})
    return records


def webqa_groups(records, id_prefix: str = "webqa") -> list[dict]:
    """One single-paraphrase group per record, id ``f"{id_prefix}-{i}"``."""
    return [
        {
            "id": f"{id_prefix}-{i}",
            "paraphrases": [rec["question"]],
            "answers": list(rec["answers"]),
            "confidences": None,
        }
        for i, rec in enumerate(records)
    ]


def sample_few_shot(records, k: int = 5, seed: int = 42, exclude_questions=()) -> list[dict]:
    """Deterministically pick ``k`` demonstrations ``{"question", "answer"}``.

    Records whose question is in ``exclude_questions`` are never chosen.
    """
    excluded = set(exclude_questions)
    pool = [i for i, rec in enumerate(records) if rec["question"] not in excluded]
    if k < 0 or k > len(pool):
        raise UserError(f"k={k} few-shot examples requested but only {len(pool)} eligible records")
    random.Random(seed).shuffle(pool)
    return [{"question": records[i]["question"], "answer": records[i]["answers"][0]} for i in pool[:k]]
