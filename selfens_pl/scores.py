"""Scores over written prediction records (``predictions.jsonl``), shared by the predict summary and ``report``.

A ``per_prompt`` run writes one record per paraphrase (``paraphrase_index`` 0..N-1) of each question: its accuracy
per paraphrase index shows how much the phrasing matters, and the oracle, the share of questions that at least one
paraphrase answers correctly, bounds any rule that picks one paraphrase's answer.
"""

from __future__ import annotations


def accuracy_by_paraphrase(records: list[dict]) -> tuple[dict[int, float], dict[int, int]]:
    """``{paraphrase_index: accuracy}`` and ``{paraphrase_index: n}`` over scored records that have an index."""
    hits: dict[int, list[bool]] = {}
    for rec in records:
        index = rec.get("paraphrase_index")
        if index is None or rec.get("correct") is None:
            continue
        hits.setdefault(int(index), []).append(bool(rec["correct"]))
    order = sorted(hits)
    return {i: sum(hits[i]) / len(hits[i]) for i in order}, {i: len(hits[i]) for i in order}


def oracle_accuracy(records: list[dict]) -> tuple[float | None, int]:
    """Share of ids with at least one correct record (any paraphrase), and the number of ids."""
    by_id: dict[str, bool] = {}
    for rec in records:
        if rec.get("correct") is None:
            continue
        key = str(rec["id"])
        by_id[key] = by_id.get(key, False) or bool(rec["correct"])
    if not by_id:
        return None, 0
    return sum(by_id.values()) / len(by_id), len(by_id)
