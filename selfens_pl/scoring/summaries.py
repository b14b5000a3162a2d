"""Scores over written prediction records (``predictions.jsonl``), shared by the predict summary and ``report``.

A ``per_prompt`` run writes one record per paraphrase (``paraphrase_index`` 0..N-1) of each question: its accuracy
per paraphrase index shows how much the phrasing matters, and the oracle, the share of questions that at least one
paraphrase answers correctly, bounds any rule that picks one paraphrase's answer.
"""

from __future__ import annotations

from collections.abc import Callable

from selfens_pl.scoring.metrics import SquadScores


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


def score_oracles(rec: dict, match: Callable[[str, list[str]], bool]) -> None:
    """A rescoring record (one with ``candidates``) also gets ``candidate_correct``: some candidate's prediction
    is right under ``match`` (the rule that set its ``correct``), and ``member_correct``: some member's own answer
    (``paraphrase_predictions``) is right. Other records are left as they are."""
    if "candidates" not in rec:
        return
    rec["candidate_correct"] = any(match(c["prediction"], rec["answers"]) for c in rec["candidates"])
    rec["member_correct"] = any(match(p, rec["answers"]) for p in rec.get("paraphrase_predictions") or ())


def record_scores(records: list[dict]) -> dict[str, float]:
    """Accuracy (from each record's ``correct``) and SQuAD EM / F1 over ``records``, every score a fraction in [0, 1]
    (the one unit of ``summary.json``; tables print percent); ``{}`` when the
    records are not scored. Computed here, on one process, so resumed and new records count alike. When every
    record has them (:func:`score_oracles`): ``candidate_oracle`` and ``member_oracle``, the shares of records
    with some right candidate and some right member answer."""
    if not records or any(r.get("correct") is None or not r.get("answers") for r in records):
        return {}
    squad = SquadScores(sync_on_compute=False)  # rank 0 alone: no collective
    squad.update([r["prediction"] for r in records], [r["answers"] for r in records])
    scores = squad.compute()
    out = {"accuracy": sum(bool(r["correct"]) for r in records) / len(records),
           "exact_match": float(scores["exact_match"]) / 100, "f1": float(scores["f1"]) / 100}
    for key, field in (("candidate_oracle", "candidate_correct"), ("member_oracle", "member_correct")):
        if all(r.get(field) is not None for r in records):
            out[key] = sum(bool(r[field]) for r in records) / len(records)
    return out


def paraphrase_scores(method: str, records: list[dict]) -> dict:
    """A ``per_prompt`` run's accuracy per paraphrase index (``{"0": acc, ...}``, with the records per index) and
    its oracle (share of questions at least one paraphrase answers correctly), as ``report`` shows them."""
    if method != "per_prompt":
        return {}
    by_index, n_by_index = accuracy_by_paraphrase(records)
    oracle, _ = oracle_accuracy(records)
    if not by_index:
        return {}
    return {"accuracy_by_paraphrase": {str(i): acc for i, acc in by_index.items()},
            "records_by_paraphrase": {str(i): n for i, n in n_by_index.items()},
            "oracle_accuracy": oracle}


ORACLE_ROW = "oracle (any paraphrase)"


def format_table(summaries: list[dict]) -> str:
    """A short fixed-width accuracy table, one row per summary; a ``per_prompt`` summary adds a row per paraphrase
    index (n: its records) and an oracle row. q/s: the questions the run itself answered per second ("-" when it
    answered none: every id was resumed)."""
    rows = []  # (label, n, accuracy, EM, F1, q/s)
    for s in summaries:
        rows.append((s["method"], s["n"], s.get("accuracy"), s.get("exact_match"), s.get("f1"),
                     s.get("questions_per_s")))
        for index, acc in (s.get("accuracy_by_paraphrase") or {}).items():
            rows.append((f"  paraphrase {index}", (s.get("records_by_paraphrase") or {}).get(index, ""), acc,
                         None, None, None))
        if s.get("oracle_accuracy") is not None:
            rows.append((f"  {ORACLE_ROW}", s["n"], s["oracle_accuracy"], None, None, None))
    width = max(22, *(len(r[0]) for r in rows)) if rows else 22

    def cell(value, spec: str, size: int, blank: str = "") -> str:
        return f"{blank:>{size}}" if value is None else f"{format(value, spec):>{size}}"

    head = f"{'method':<{width}} {'n':>5} {'accuracy':>9} {'EM':>7} {'F1':>7} {'q/s':>8}"
    lines = [head, "-" * len(head)]
    for label, n, acc, em, f1, qps in rows:
        main_row = not label.startswith(" ")
        lines.append(f"{label:<{width}} {n:>5} {'' if acc is None else f'{100 * acc:.1f}%':>9} "
                     f"{cell(None if em is None else 100 * em, '.1f', 7)} "
                     f"{cell(None if f1 is None else 100 * f1, '.1f', 7)} "
                     f"{cell(qps, '.2f', 8, '-' if main_row else '')}".rstrip())
    return "\n".join(lines)
